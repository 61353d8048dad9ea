"""Building, signing and following transactions: the steps the send-once journal is made of."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionStatus

from roadie.chain.client import Chain
from roadie.jobs.errors import PermanentError, TransientError

#: The largest serialised transaction the cluster accepts (IPv6 MTU minus headers).
MAX_TRANSACTION_BYTES = 1232
LEVELS = ("processed", "confirmed", "finalized")


class TransactionTooLarge(PermanentError):  # noqa: N818 - reads as the condition it reports
    code = "transaction_too_large"


def sign(
    instructions: Sequence[Instruction], payer: Pubkey, signers: Sequence[Keypair], blockhash: Hash
) -> VersionedTransaction:
    """A legacy transaction signed by every signer (the payer first)."""
    message = Message.new_with_blockhash(list(instructions), payer, blockhash)
    return VersionedTransaction(message, list(signers))


def checked_size(tx: VersionedTransaction) -> bytes:
    raw = bytes(tx)
    if len(raw) > MAX_TRANSACTION_BYTES:
        raise TransactionTooLarge(f"transaction is {len(raw)} bytes; the limit is {MAX_TRANSACTION_BYTES}")
    return raw


def level(status: TransactionStatus | None) -> str | None:
    """``processed``/``confirmed``/``finalized``, or None when the cluster does not know the signature."""
    if status is None:
        return None
    if status.confirmation_status is None:
        return "finalized" if status.confirmations is None else "confirmed"
    return str(status.confirmation_status).rsplit(".", 1)[-1].lower()


async def wait_for(
    chain: Chain, signatures: Sequence[Signature], wanted: str, timeout_s: float, interval_s: float
) -> list[TransactionStatus | None]:
    """Poll until every signature reached ``wanted`` (or failed); the last statuses when time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = await chain.statuses(list(signatures))
        if all(
            s is not None and (s.err is not None or LEVELS.index(level(s) or "processed") >= LEVELS.index(wanted))
            for s in statuses
        ):
            return statuses
        if time.monotonic() >= deadline:
            return statuses
        await asyncio.sleep(interval_s)


async def send_and_confirm(
    chain: Chain, instructions: Sequence[Instruction], signers: Sequence[Keypair], *, timeout_s: float = 30
) -> Signature:
    """Sign with a fresh blockhash, send and wait for ``confirmed``: for set-up steps, not for value."""
    blockhash, _ = await chain.latest_blockhash()
    tx = sign(instructions, signers[0].pubkey(), signers, blockhash)
    result = await chain.send(checked_size(tx))
    if result.outcome not in ("sent", "already_processed"):
        raise PermanentError(
            f"transaction refused: {result.outcome} {result.error or ''}".strip(), code="chain_rejected"
        )
    (status,) = await wait_for(chain, tx.signatures[:1], "confirmed", timeout_s, 0.1)
    if status is None or level(status) == "processed":
        raise TransientError("transaction not confirmed in time", code="chain_unconfirmed")
    if status.err is not None:
        raise PermanentError(f"transaction failed: {status.err}", code="chain_rejected")
    return tx.signatures[0]
