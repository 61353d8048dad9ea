"""The send-once journal: how a chain job sends value exactly once, whatever crashes when.

1. Build and sign the transaction with no database transaction open, then commit it to ``chain_sends`` with
   its last valid block height *before* sending, in a short transaction that locks the mint or batch row and
   first checks it is still as it was read when deciding (so two workers cannot both journal, and only
   journaled bytes are sent). No row lock is held while the chain is asked.
2. Send the stored bytes; poll ``getSignatureStatuses`` (whole history) until confirmed, re-sending the
   same bytes every few seconds while the blockhash is valid, then until finalized.
3. On a retry, :func:`check` says for each stored transaction what the chain knows:
   - ``landed``: record it and carry on from there;
   - ``in_flight``: unknown, but the blockhash is valid at the *finalized* block height, so it may
     still land: re-send the same bytes (the cluster deduplicates by signature);
   - ``expired``: unknown, and the finalized block height passed its last valid height, so no fork
     can ever include it: only now may a new transaction be built (callers check the chain first);
   - ``failed``: it landed with an error (atomic: nothing moved).

   A new transaction is built only on ``expired``: the same test against the chain's own block height
   as before, whatever compute budget and priority fee (:mod:`roadie.chain.budget`) the old one carried.
4. :func:`follow` also reads what each transaction that reached ``confirmed`` paid (``meta.fee``), for
   the journal row's ``fee_lamports`` (left unknown if the RPC's answer is unreadable).

``ROADIE_TEST_CRASH_POINT=<point>:<marker file>`` makes the worker SIGKILL its whole process group at
``before_send``, ``after_send`` or ``after_confirm`` the first time it gets there (the marker file
records that it did), so tests can prove redelivery finishes the work exactly once. It is armed only
with ``ROADIE_FAULT_INJECTION=true``, which settings refuse under ``ROADIE_ENV=production``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from solana.rpc.commitment import Finalized
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from models.chain import ChainSend
from roadie.chain.client import Chain, RpcBadAnswer
from roadie.chain.sending import LEVELS, checked_size, level
from roadie.settings import Settings, get_settings

log = logging.getLogger(__name__)

CRASH_POINT_ENV = "ROADIE_TEST_CRASH_POINT"
#: How often a transaction that is neither landed nor expired is sent again (validators drop some).
RESEND_EVERY_S = 2.0


def crash_point(name: str) -> None:
    """Test-only: SIGKILL this worker (and its pool) at ``name``, once per marker file, if fault injection is on."""
    spec = os.environ.get(CRASH_POINT_ENV)
    if not spec:
        return
    if not get_settings().fault_injection:
        log.warning("chain.crash_point_refused", extra={"point": name, "reason": "ROADIE_FAULT_INJECTION is off"})
        return
    point, _, marker = spec.partition(":")
    if point != name or not marker:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    log.warning("chain.crash_point", extra={"point": name})
    os.killpg(os.getpgid(0), signal.SIGKILL)


@dataclass(frozen=True)
class Pending:
    """A journaled transaction as the follower needs it (detached from its session)."""

    id: uuid.UUID
    signature: Signature
    raw: bytes
    last_valid_block_height: int

    @classmethod
    def of(cls, send: ChainSend) -> Pending:
        return cls(
            send.id, Signature.from_string(send.signature), send.signed_transaction, send.last_valid_block_height
        )


@dataclass(frozen=True)
class Verdict:
    state: str  # landed | failed | in_flight | expired
    level: str | None = None
    slot: int | None = None
    error: str | None = None
    fee: int | None = None  # lamports paid, once read from the landed transaction's meta

    def reached(self, wanted: str) -> bool:
        return self.state == "landed" and LEVELS.index(self.level or "processed") >= LEVELS.index(wanted)

    @property
    def settled(self) -> bool:
        """Nothing more will happen to it unless it is re-sent or rebuilt."""
        return self.state in ("failed", "expired")


def journal(purpose: str, tx: VersionedTransaction, last_valid_block_height: int, **owner: uuid.UUID) -> ChainSend:
    """The journal row of a signed transaction; add it and commit before sending."""
    return ChainSend(
        purpose=purpose,
        signature=str(tx.signatures[0]),
        signed_transaction=checked_size(tx),
        last_valid_block_height=last_valid_block_height,
        status="pending",
        **owner,
    )


async def check(chain: Chain, sends: Sequence[Pending]) -> list[Verdict]:
    """What the chain knows about each journaled transaction (see the module docstring).

    The statuses and the finalized height come from one endpoint (:meth:`Chain.consistently`): one lagging
    behind another could otherwise make a landed transaction look expired."""
    return await chain.consistently(lambda view: _verdicts(view, sends))


async def _verdicts(chain: Chain, sends: Sequence[Pending]) -> list[Verdict]:
    statuses = await chain.statuses([send.signature for send in sends])
    finalized_height: int | None = None
    verdicts = []
    for send, status in zip(sends, statuses, strict=True):
        if status is not None:
            if status.err is not None:
                verdicts.append(Verdict("failed", level(status), status.slot, str(status.err)))
            else:
                verdicts.append(Verdict("landed", level(status), status.slot))
            continue
        if finalized_height is None:
            finalized_height = await chain.block_height(Finalized)
        expired = finalized_height > send.last_valid_block_height
        verdicts.append(Verdict("expired" if expired else "in_flight"))
    return verdicts


async def with_fees(chain: Chain, sends: Sequence[Pending], verdicts: Sequence[Verdict]) -> list[Verdict]:
    """The verdicts, with what each transaction that landed at ``confirmed`` or deeper paid (failed ones pay too).

    The fee is a record, not a step of the send: an unreadable answer leaves it unknown (and is logged)
    rather than holding up a transaction that landed."""
    priced = []
    for send, verdict in zip(sends, verdicts, strict=True):
        fee = None
        if verdict.state in ("landed", "failed") and verdict.level in ("confirmed", "finalized"):
            try:
                fee = await chain.fee_paid(send.signature)
            except RpcBadAnswer as exc:
                log.warning("chain.fee_unreadable", extra={"signature": str(send.signature), "error": str(exc)})
        priced.append(replace(verdict, fee=fee))
    return priced


async def send_all(chain: Chain, sends: Sequence[Pending]) -> dict[uuid.UUID, str]:
    """Send (or re-send) the stored bytes; returns preflight refusals by send id."""
    refused = {}
    for send in sends:
        result = await chain.send(send.raw)
        if result.outcome == "rejected":
            refused[send.id] = result.error or "rejected by preflight"
    return refused


async def follow(chain: Chain, sends: Sequence[Pending], wanted: str, settings: Settings) -> list[Verdict]:
    """Poll until every transaction reached ``wanted`` or settled, re-sending those in flight.

    Returns the last verdicts, also when ``ROADIE_CHAIN_FINALITY_TIMEOUT_S`` ran out (the caller
    records what it can and retries later).
    """
    deadline = time.monotonic() + settings.chain_finality_timeout_s
    last_sent = time.monotonic()
    while True:
        verdicts = await check(chain, sends)
        if all(v.reached(wanted) or v.settled for v in verdicts) or time.monotonic() >= deadline:
            return await with_fees(chain, sends, verdicts)
        if time.monotonic() - last_sent >= RESEND_EVERY_S:
            await send_all(chain, [s for s, v in zip(sends, verdicts, strict=True) if v.state == "in_flight"])
            last_sent = time.monotonic()
        await asyncio.sleep(settings.chain_poll_interval_s)
