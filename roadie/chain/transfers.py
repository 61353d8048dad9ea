"""Payout transfers from the treasury: recorded in batches, paid exactly once.

:func:`create_batch` records a batch (unique key), its transfers and the ``chain.transfer_batch`` job
inside the caller's transaction. The job packs ``transfer_checked`` instructions (with an idempotent
``create_associated_token_account`` for recipients without a token account) into transactions under
1,232 bytes, each starting with its compute budget and priority fee (:mod:`roadie.chain.budget`) and a memo
``roadie:payout:<batch id>``, and sends them through the
send-once journal (:mod:`roadie.chain.journal`). A transfer is ``pending`` until its transaction is
journaled (``submitted``), then ``confirmed`` and ``finalized``; the ledger counts it paid only then.

Re-running a batch (an admin retry of a failed job) never pays twice: transfers whose transaction
landed are recorded from the chain, those whose transaction may still land are re-sent as the same
bytes, and only transfers whose transaction can no longer land (expired, or failed on chain, which
moves nothing) are built again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter
from solders.instruction import Instruction
from solders.pubkey import Pubkey
from solders.token.state import Mint, TokenAccount
from solders.transaction import VersionedTransaction
from spl.memo.constants import MEMO_PROGRAM_ID
from spl.memo.instructions import MemoParams, create_memo
from spl.token.instructions import (
    TransferCheckedParams,
    create_idempotent_associated_token_account,
    get_associated_token_address,
    transfer_checked,
)
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models.chain import ChainSend, PayoutBatch, PayoutTransfer
from roadie.chain import journal
from roadie.chain.addresses import SolanaWallet, TokenUnits
from roadie.chain.budget import BUDGET_INSTRUCTIONS, SimulationFailed, sign_budgeted, with_budget
from roadie.chain.client import Chain
from roadie.chain.fees import MAX_COMPUTE_UNITS
from roadie.chain.journal import Pending, Verdict, crash_point
from roadie.chain.keys import PlatformKeypair
from roadie.chain.metrics import observe_fee
from roadie.chain.platform import reward_mint
from roadie.chain.sending import MAX_TRANSACTION_BYTES, sign
from roadie.db import transaction
from roadie.jobs.creation import enqueue
from roadie.jobs.errors import PermanentError, TransientError
from roadie.settings import Settings

MEMO_PREFIX = "roadie:payout:"
ROUNDS = 3
_WALLET = TypeAdapter(SolanaWallet)
_AMOUNT = TypeAdapter(TokenUnits)


class TransferBatchPayload(BaseModel):
    """Pay a recorded payout batch (made by ``create_batch``); safe to re-run."""

    model_config = ConfigDict(extra="forbid")

    batch_id: uuid.UUID


def memo_text(batch_id: uuid.UUID) -> str:
    return f"{MEMO_PREFIX}{batch_id}"


def create_batch(
    session: Session, key: str, transfers: Iterable[tuple[str, int]], *, mint: str | None = None
) -> uuid.UUID:
    """Record a payout batch and enqueue its ``chain.transfer_batch`` job, inside the caller's transaction.

    ``transfers`` are (recipient wallet, amount in base units); amounts to one wallet are added up.
    Calling it again with the same ``key`` returns the existing batch and changes nothing. Raises
    ``ValueError`` for an off-curve or malformed wallet, a non-positive amount or an empty batch.
    """
    from roadie.jobs.types import job_types

    if not 1 <= len(key) <= 200:
        raise ValueError("a batch key is 1 to 200 characters")
    totals: dict[str, int] = {}
    for wallet, amount in transfers:
        address = _WALLET.validate_python(wallet)
        totals[address] = totals.get(address, 0) + _AMOUNT.validate_python(amount)
    if not totals:
        raise ValueError("a payout batch needs at least one transfer")
    created = session.execute(
        insert(PayoutBatch)
        .values(key=key, mint_address=mint or str(reward_mint()), total=sum(totals.values()), status="pending")
        .on_conflict_do_nothing(index_elements=[PayoutBatch.key])
        .returning(PayoutBatch.id)
    ).scalar_one_or_none()
    if created is None:
        return session.scalars(select(PayoutBatch.id).where(PayoutBatch.key == key)).one()
    session.add_all(
        PayoutTransfer(batch_id=created, recipient_wallet=wallet, amount=amount, status="pending")
        for wallet, amount in totals.items()
    )
    job = enqueue(session, job_types()["chain.transfer_batch"], {"batch_id": str(created)}, actor="payouts")
    session.get_one(PayoutBatch, created).job_id = job.id
    session.flush()
    return created


@dataclass(frozen=True)
class Packed:
    """The instructions of one transaction of a batch (its compute budget to come first) and the transfers in
    it, with the index of each one's transfer_checked in the budgeted transaction."""

    instructions: list[Instruction]
    transfers: list[tuple[PayoutTransfer, int]]


@dataclass(frozen=True)
class Signed:
    tx: VersionedTransaction
    transfers: list[tuple[PayoutTransfer, int]]


@dataclass(frozen=True)
class Token:
    mint: Pubkey
    program: Pubkey
    decimals: int


def pack(
    batch_id: uuid.UUID,
    transfers: Sequence[tuple[PayoutTransfer, bool]],
    token: Token,
    platform: PlatformKeypair,
    blockhash: Any,
) -> list[Packed]:
    """Greedy packing under 1,232 bytes, compute budget included; ``transfers`` pairs each with whether its
    recipient lacks a token account."""
    payer = platform.pubkey
    source = get_associated_token_address(payer, token.mint, token.program)
    memo = create_memo(MemoParams(MEMO_PROGRAM_ID, payer, memo_text(batch_id).encode()))
    packed: list[Packed] = []
    instructions: list[Instruction] = [memo]
    members: list[tuple[PayoutTransfer, int]] = []

    def size(candidate: list[Instruction]) -> int:
        """The budget's size does not depend on its values: the largest stand in for the ones to come."""
        return len(bytes(sign(with_budget(candidate, MAX_COMPUTE_UNITS, 0), payer, [platform.signer], blockhash)))

    for transfer, needs_account in transfers:
        owner = Pubkey.from_string(transfer.recipient_wallet)
        destination = get_associated_token_address(owner, token.mint, token.program)
        step = (
            [create_idempotent_associated_token_account(payer, owner, token.mint, token.program)]
            if needs_account
            else []
        )
        step.append(
            transfer_checked(
                TransferCheckedParams(
                    token.program, source, token.mint, destination, payer, transfer.amount, token.decimals
                )
            )
        )
        if members and size(instructions + step) > MAX_TRANSACTION_BYTES:
            packed.append(Packed(instructions, members))
            instructions, members = [memo], []
        instructions = instructions + step
        members.append((transfer, BUDGET_INSTRUCTIONS + len(instructions) - 1))
    if members:
        packed.append(Packed(instructions, members))
    return packed


async def _token(chain: Chain, mint: Pubkey) -> Token:
    account = await chain.account(mint)
    if account is None:
        raise PermanentError(f"the payout mint {mint} does not exist", code="mint_not_found")
    return Token(mint, account.owner, Mint.from_bytes(bytes(account.data)[:82]).decimals)


async def _treasury_balance(chain: Chain, token: Token, platform: PlatformKeypair) -> int:
    account = await chain.account(get_associated_token_address(platform.pubkey, token.mint, token.program))
    return 0 if account is None else TokenAccount.from_bytes(bytes(account.data)[:165]).amount


def _record(session: Session, send: ChainSend, verdict: Verdict) -> None:
    """Apply one transaction's verdict to it and its transfers."""
    transfers = session.scalars(select(PayoutTransfer).where(PayoutTransfer.send_id == send.id)).all()
    if verdict.fee is not None:
        send.fee_lamports = verdict.fee
    if verdict.state == "landed" and verdict.level in ("confirmed", "finalized"):
        send.status, send.slot = verdict.level, verdict.slot
        for transfer in transfers:
            transfer.status, transfer.slot = verdict.level, verdict.slot
    elif verdict.state == "in_flight":
        send.status = "pending"
        for transfer in transfers:
            transfer.status, transfer.slot = "submitted", None
    elif verdict.settled:  # it can never land, or it failed and moved nothing: its transfers are free again
        send.status, send.error = verdict.state, verdict.error
        for transfer in transfers:
            transfer.status, transfer.send_id, transfer.signature, transfer.instruction_index = (
                "failed" if verdict.state == "failed" else "pending",
                None,
                None,
                None,
            )


def _settle_batch(batch: PayoutBatch, transfers: Sequence[PayoutTransfer]) -> None:
    """The batch is as far as its least advanced transfer (failed ones wait to be built again)."""
    statuses = {"pending" if t.status == "failed" else t.status for t in transfers}
    batch.status = next((s for s in ("pending", "submitted", "confirmed") if s in statuses), "finalized")
    batch.error_code = batch.error_message = None


def _fail(batch: PayoutBatch, code: str, message: str) -> PermanentError:
    batch.status, batch.error_code, batch.error_message = "failed", code, message
    return PermanentError(message, code=code)


def _result(batch: PayoutBatch, transfers: Sequence[PayoutTransfer]) -> dict[str, Any]:
    return {
        "batch_id": str(batch.id),
        "key": batch.key,
        "status": batch.status,
        "total": batch.total,
        "transfers": len(transfers),
        "signatures": sorted({t.signature for t in transfers if t.signature}),
    }


def _todo(transfers: Iterable[PayoutTransfer]) -> list[PayoutTransfer]:
    """Transfers with no transaction that may still land: to be built (again)."""
    return [t for t in transfers if t.status in ("pending", "failed")]


Version = tuple[int, frozenset[uuid.UUID]]


def _version(session: Session, batch: PayoutBatch) -> Version:
    """What a decision to build rests on: how many transactions were journaled, and which transfers wait for one."""
    sends = session.scalar(select(func.count()).select_from(ChainSend).where(ChainSend.batch_id == batch.id))
    return int(sends or 0), frozenset(t.id for t in _todo(batch.transfers))


def _look(batch_id: uuid.UUID) -> tuple[dict[str, Any] | None, list[Pending]]:
    """The batch's result if it is finalized, else its journaled transactions that may still land."""
    with transaction() as session:
        batch = session.get(PayoutBatch, batch_id)
        if batch is None:
            raise PermanentError(f"no payout batch {batch_id}", code="batch_not_found")
        if batch.status == "finalized":
            return _result(batch, batch.transfers), []
        live = session.scalars(
            select(ChainSend).where(ChainSend.batch_id == batch.id, ChainSend.status.in_(("pending", "confirmed")))
        ).all()
        return None, [Pending.of(send) for send in live]


@dataclass(frozen=True)
class Reconciled:
    """A batch once the chain's verdicts on its journaled transactions are recorded."""

    mint: str
    version: Version
    todo: list[PayoutTransfer]  # detached: read for building, written only under the lock
    in_flight: list[Pending]  # to re-send
    landed: list[Pending]  # to follow


def _reconcile(batch_id: uuid.UUID, live: Sequence[Pending], verdicts: Sequence[Verdict]) -> Reconciled:
    """Record the verdicts on the transactions no concurrent run settled meanwhile; what is left to build."""
    with transaction() as session:
        batch = session.get_one(PayoutBatch, batch_id, with_for_update=True)
        in_flight: list[Pending] = []
        landed: list[Pending] = []
        for pending, verdict in zip(live, verdicts, strict=True):
            send = session.get_one(ChainSend, pending.id)
            if send.status not in ("pending", "confirmed"):
                continue
            _record(session, send, verdict)
            if verdict.state in ("in_flight", "landed"):
                (in_flight if verdict.state == "in_flight" else landed).append(pending)
        session.flush()
        transfers = list(batch.transfers)
        todo = _todo(transfers)
        if not todo:
            _settle_batch(batch, transfers)
        return Reconciled(batch.mint_address, _version(session, batch), todo, in_flight, landed)


async def _build(
    chain: Chain, batch_id: uuid.UUID, seen: Reconciled, platform: PlatformKeypair, settings: Settings
) -> list[Pending] | None:
    """With no transaction open: ask the chain what the transfers still to pay need, and sign them; then journal
    them. None: a concurrent run moved the batch on meanwhile (nothing was journaled)."""
    token = await _token(chain, Pubkey.from_string(seen.mint))
    needed, balance = sum(t.amount for t in seen.todo), await _treasury_balance(chain, token, platform)
    if balance < needed:
        message = f"the treasury holds {balance} base units; the batch still needs {needed}"
        with transaction() as session:
            batch = _if_unchanged(session, batch_id, seen.version)
            failure = None if batch is None else _fail(batch, "treasury_insufficient_funds", message)
        if failure is None:
            return None
        raise failure
    accounts = await chain.accounts(
        [
            get_associated_token_address(Pubkey.from_string(t.recipient_wallet), token.mint, token.program)
            for t in seen.todo
        ]
    )
    blockhash, last_valid = await chain.latest_blockhash()
    packed = pack(
        batch_id, [(t, a is None) for t, a in zip(seen.todo, accounts, strict=True)], token, platform, blockhash
    )
    try:
        signed = [
            Signed(await sign_budgeted(chain, one.instructions, [platform.signer], blockhash, settings), one.transfers)
            for one in packed
        ]
    except SimulationFailed as failure:
        with transaction() as session:
            batch = _if_unchanged(session, batch_id, seen.version)
            refused = None if batch is None else _fail(batch, failure.code, str(failure))
        if refused is None:
            return None
        raise refused from None
    return _journal(batch_id, seen.version, signed, last_valid)


def _if_unchanged(session: Session, batch_id: uuid.UUID, version: Version) -> PayoutBatch | None:
    """The batch locked, if it is still as read (None: a concurrent run moved it on since)."""
    batch = session.get_one(PayoutBatch, batch_id, with_for_update=True)
    return batch if _version(session, batch) == version else None


def _journal(batch_id: uuid.UUID, version: Version, packed: Sequence[Signed], last_valid: int) -> list[Pending] | None:
    """Commit the signed transactions before they are sent, if no concurrent run moved the batch on meanwhile."""
    with transaction() as session:
        batch = _if_unchanged(session, batch_id, version)
        if batch is None:
            return None
        new = []
        for one in packed:
            send = journal.journal("payout", one.tx, last_valid, batch_id=batch.id)
            session.add(send)
            session.flush()
            for transfer, index in one.transfers:
                row = session.get_one(PayoutTransfer, transfer.id)
                row.status, row.send_id, row.signature, row.instruction_index, row.slot = (
                    "submitted",
                    send.id,
                    send.signature,
                    index,
                    None,
                )
            new.append(Pending.of(send))
        _settle_batch(batch, list(batch.transfers))
        return new


async def pay_batch(chain: Chain, batch_id: uuid.UUID, platform: PlatformKeypair, settings: Settings) -> dict[str, Any]:
    """Pay (or finish paying) a batch and follow its transactions to finalized; the batch as the result.

    No row lock is held while the chain is asked: a round reads the batch, asks the chain, and journals new
    transactions in a short transaction that first checks the batch is still as it was read."""
    for _ in range(ROUNDS):
        finished, live = _look(batch_id)
        if finished is not None:
            return finished
        seen = _reconcile(batch_id, live, await journal.check(chain, live))
        new: list[Pending] = []
        if seen.todo:
            journaled = await _build(chain, batch_id, seen, platform, settings)
            if journaled is None:
                continue  # a concurrent run journaled first: look again
            new = journaled
            crash_point("before_send")
        refused = await journal.send_all(chain, new + seen.in_flight)
        crash_point("after_send")
        if refused:
            raise _refused(batch_id, refused)
        everything = new + seen.in_flight + seen.landed
        verdicts = await journal.follow(chain, everything, "confirmed", settings)
        _store(batch_id, everything, verdicts)
        if any(v.settled for v in verdicts):
            continue  # expired or failed: the next round decides again
        if not all(v.reached("confirmed") for v in verdicts):
            raise TransientError("payout transactions are not confirmed yet", code="payout_unconfirmed")
        crash_point("after_confirm")
        verdicts = await journal.follow(chain, everything, "finalized", settings)
        result = _store(batch_id, everything, verdicts)
        if result["status"] == "finalized":
            return result
        if not any(v.settled or v.state == "in_flight" for v in verdicts):
            raise TransientError("payout transactions are not finalized yet", code="payout_unfinalized")
    raise TransientError("payout transactions expired repeatedly", code="payout_unconfirmed")


def _store(batch_id: uuid.UUID, sends: Sequence[Pending], verdicts: Sequence[Verdict]) -> dict[str, Any]:
    fee: int | None = None
    with transaction() as session:
        batch = session.get_one(PayoutBatch, batch_id, with_for_update=True)
        was = batch.status
        for pending, verdict in zip(sends, verdicts, strict=True):
            send = session.get_one(ChainSend, pending.id)
            if send.status in ("pending", "confirmed"):  # a concurrent run may have settled it
                _record(session, send, verdict)
        session.flush()
        transfers = list(batch.transfers)
        _settle_batch(batch, transfers)
        if any(v.state == "failed" for v in verdicts):
            error = next(v.error for v in verdicts if v.state == "failed")
            _fail(batch, "transfer_failed", f"a payout transaction failed on chain: {error}")
        if batch.status == "finalized" and was != "finalized":
            fee = session.scalar(select(func.sum(ChainSend.fee_lamports)).where(ChainSend.batch_id == batch.id))
        result = _result(batch, transfers)
    if fee is not None:
        observe_fee("payout", int(fee))
    return result


def _refused(batch_id: uuid.UUID, refused: dict[uuid.UUID, str]) -> PermanentError:
    """Preflight refused transactions: they never ran, so their transfers are free to be built again."""
    with transaction() as session:
        batch = session.get_one(PayoutBatch, batch_id, with_for_update=True)
        for send_id, reason in refused.items():
            _record(session, session.get_one(ChainSend, send_id), Verdict("failed", error=reason))
        session.flush()
        _settle_batch(batch, list(batch.transfers))
        reasons = "; ".join(sorted(set(refused.values())))
        return _fail(batch, "transfer_rejected", f"the cluster refused payout transactions: {reasons}")
