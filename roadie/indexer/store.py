"""Writing what the indexer read, and undoing it after a fork, inside the caller's database transaction.

Effects are applied exactly once because they ride on a row's state change, which happens once: inserting an
``indexed_transactions`` row (``ON CONFLICT DO NOTHING ... RETURNING``), flipping it from ``confirmed`` to
``finalized``, or deleting it. Re-reading a transaction, or two runners racing, changes nothing twice.

- NFT ownership follows transfers from ``confirmed`` on (it is what wallets show); a fork puts the previous
  owner back.
- Anything that moves value acts only on ``finalized`` rows, which no fork can remove: a payout transfer
  (``token_transfer`` under a ``roadie:payout:<batch id>`` memo) is marked ``finalized`` only then, and
  only if it is the batch's transfer at that (signature, instruction index), of that amount and mint, to
  the recipient's token account; its batch is finalized when all its transfers are.
- A stake deposit (a transfer into the staking vault) and an escrow sale are kept at ``confirmed`` as ``pending``
  facts (a deposit whose memo does not parse is ``refused`` at once); once finalized, the deposit opens its
  staking position and the sale is recorded, each in a savepoint: what the ledger refuses (an unknown wallet, a
  rate above the maximum) marks the fact ``refused`` with the reason and the indexer goes on. A fork deletes a
  pending fact with its transaction, before it was ever money.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from solders.pubkey import Pubkey
from spl.token.instructions import get_associated_token_address
from sqlalchemy import func, inspect, literal, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.chain import ChainSend, PayoutBatch, PayoutTransfer
from models.indexer import ChainEvent, IndexedDeposit, IndexedSale, IndexedTransaction, IndexerCursor
from models.music import Nft
from roadie.chain.platform import escrow_wallet, reward_mint
from roadie.chain.transfers import MEMO_PREFIX
from roadie.indexer.decode import DecodedTransaction, Event
from roadie.indexer.facts import FactError, settlement, stake_terms
from roadie.jobs.errors import PermanentError
from roadie.ledger.books import refusal
from roadie.ledger.royalties import SaleInput, record_sale, seller_fee_basis_points
from roadie.ledger.staking import open_position, staker
from roadie.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Read:
    """One transaction as the indexer read it at ``confirmed``: decoded, or poison with the decoder's error."""

    signature: str
    slot: int
    block_time: int | None
    decoded: DecodedTransaction | None
    error: str | None = None


def _block_time(seconds: int | None) -> dt.datetime | None:
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.UTC)


def record(session: Session, reads: Sequence[Read], finalized_slot: int, settings: Settings) -> list[str]:
    """Insert the transactions (oldest first) and their events, applying their effects; returns the new ones.

    One INSERT for the transactions tells which are new; only those get events and effects, in chain order.
    """
    if not reads:
        return []
    rows = [
        {
            "signature": read.signature,
            "slot": read.slot,
            "block_time": _block_time(read.block_time),
            "status": "finalized" if read.slot <= finalized_slot else "confirmed",
            "succeeded": read.decoded.succeeded if read.decoded else True,
            "error": read.error,
        }
        for read in reads
    ]
    new = set(
        session.scalars(
            insert(IndexedTransaction)
            .values(rows)
            .on_conflict_do_nothing(index_elements=[IndexedTransaction.signature])
            .returning(IndexedTransaction.signature)
        )
    )
    inserted: list[str] = []
    payouts: list[tuple[ChainEvent, int]] = []
    for read in reads:
        if read.signature not in new:
            continue
        inserted.append(read.signature)
        if read.error is not None:
            log.warning("indexer.poison", extra={"signature": read.signature, "slot": read.slot, "error": read.error})
        for event in read.decoded.events if read.decoded else []:
            row = _event_row(read.signature, event)
            if event.kind == "nft_transfer":
                row.previous_owner = _take_ownership(session, event)
            elif event.kind == "token_transfer" and read.slot <= finalized_slot:
                payouts.append((row, read.slot))
            session.add(row)
        if read.decoded:
            _keep_facts(session, read.decoded, settings)
    session.flush()
    for payout, slot in payouts:
        _payout_finalized(session, payout, slot)
    _book(
        session, [read.signature for read in reads if read.signature in new and read.slot <= finalized_slot], settings
    )
    return inserted


def _event_row(signature: str, event: Event) -> ChainEvent:
    return ChainEvent(
        signature=signature,
        instruction_index=event.instruction_index,
        kind=event.kind,
        program=event.program,
        mint=event.mint,
        source=event.source,
        destination=event.destination,
        authority=event.authority,
        owner=event.owner,
        amount=event.amount,
        memo=event.memo,
    )


def _keep_facts(session: Session, decoded: DecodedTransaction, settings: Settings) -> None:
    """The transaction's stake deposits and escrow sale, pending (or refused, with the reason)."""
    for event in decoded.events:
        if event.kind != "stake_deposit":
            continue
        deposit = IndexedDeposit(
            signature=decoded.signature, instruction_index=event.instruction_index, wallet=event.authority,
            mint=event.mint, amount=event.amount, memo=event.memo, status="pending",
        )  # fmt: skip
        try:
            terms = stake_terms(event.memo)
            deposit.rate_bps, deposit.rate_kind, deposit.lock_seconds = (
                terms.rate_bps,
                terms.rate_kind,
                terms.lock_seconds,
            )
        except FactError as exc:
            _refuse(deposit, exc.code, exc.message)
        session.add(deposit)
    if not any(event.kind == "nft_transfer" for event in decoded.events):
        return  # no sale, and no need to derive the escrow's address
    sold = settlement(decoded.events, {escrow_wallet(settings)})
    if sold is None:
        return
    sale = IndexedSale(
        signature=decoded.signature, nft_mint=sold.nft_mint, buyer=sold.buyer, seller=sold.seller,
        payment_mint=sold.payment_mint, price=sold.price, status="pending",
    )  # fmt: skip
    if sold.refusal is not None:
        _refuse(sale, sold.refusal.code, sold.refusal.message)
    elif sold.payment_mint != str(reward_mint(settings)):
        _refuse(sale, "wrong_payment_mint", f"paid in {sold.payment_mint}, not the reward mint {reward_mint(settings)}")
    session.add(sale)


Fact = TypeVar("Fact", IndexedDeposit, IndexedSale)


def _refuse(fact: IndexedDeposit | IndexedSale, code: str, message: str) -> None:
    """Keep the fact, marked with why the ledger cannot take it, for an admin (and say so in the log)."""
    fact.status, fact.error_code, fact.error_message = "refused", code, message
    log.warning(
        "indexer.fact_refused",
        extra={"signature": fact.signature, "fact": type(fact).__name__, "code": code, "error": message},
    )


def _book(session: Session, signatures: Sequence[str], settings: Settings) -> None:
    """Open the positions and record the sales of these (just finalized) transactions' pending facts, once each.

    Each in a savepoint: a refusal by the ledger undoes that fact's writes only and is kept on its row, and the
    indexer goes on.
    """
    if not signatures:
        return
    times = dict(
        session.execute(
            select(IndexedTransaction.signature, IndexedTransaction.block_time).where(
                IndexedTransaction.signature.in_(signatures)
            )
        )
        .tuples()
        .all()
    )
    now = dt.datetime.now(dt.UTC)
    facts: list[IndexedDeposit | IndexedSale] = [
        *_pending(session, IndexedDeposit, signatures),
        *_pending(session, IndexedSale, signatures),
    ]
    for fact in facts:
        at = times[fact.signature] or now
        try:
            with session.begin_nested():
                if isinstance(fact, IndexedDeposit):
                    _open(session, fact, at, settings)
                else:
                    _record(session, fact, at, now)
                fact.status = "booked"
        except PermanentError as exc:
            _refuse(fact, exc.code, exc.message)
        except IntegrityError as exc:
            refused = refusal(exc)
            _refuse(fact, refused.code, refused.message)
    session.flush()


def _pending(session: Session, table: type[Fact], signatures: Sequence[str]) -> Sequence[Fact]:
    return session.scalars(
        select(table)
        .where(table.signature.in_(signatures), table.status == "pending")
        .order_by(*inspect(table).primary_key)
        .with_for_update()
    ).all()


def _open(session: Session, deposit: IndexedDeposit, at: dt.datetime, settings: Settings) -> None:
    """Open the staking position of a pending deposit (a pending deposit's memo named its terms)."""
    assert deposit.rate_bps is not None
    assert deposit.rate_kind is not None
    assert deposit.lock_seconds is not None
    deposit.position_id = open_position(
        session, staker(session, deposit.wallet), deposit.mint, deposit.amount, deposit.rate_bps, deposit.rate_kind,
        deposit.lock_seconds, at, settings,
    ).id  # fmt: skip


def _record(session: Session, pending: IndexedSale, sold_at: dt.datetime, now: dt.datetime) -> None:
    """Record the sale of a pending settlement: its NFT's royalty to the NFT's creator."""
    assert pending.price is not None
    nft = session.scalars(select(Nft).where(Nft.mint_address == pending.nft_mint)).one()
    sale = SaleInput(pending.signature, nft.id, pending.price, seller_fee_basis_points(session, nft), sold_at)
    pending.sale_id = record_sale(session, sale, "indexer", now)[0].id


def _take_ownership(session: Session, event: Event) -> str | None:
    """Make the transfer's receiver the NFT's owner; returns who owned it before (None: not our NFT)."""
    if event.owner is None:
        log.warning("indexer.owner_unknown", extra={"mint": event.mint, "destination": event.destination})
        return None
    nft = session.scalars(select(Nft).where(Nft.mint_address == event.mint).with_for_update()).one_or_none()
    if nft is None:
        return None
    previous, nft.owner_wallet = nft.owner_wallet, event.owner
    return previous


def payout_batch_id(memo: str | None) -> uuid.UUID | None:
    """The batch id of a payout memo (``roadie:payout:<batch id>``), or None."""
    if memo is None or not memo.startswith(MEMO_PREFIX):
        return None
    try:
        return uuid.UUID(memo.removeprefix(MEMO_PREFIX))
    except ValueError:
        return None


def _payout_finalized(session: Session, event: ChainEvent, slot: int) -> None:
    """Mark the batch's transfer at this (signature, instruction) finalized, once it matches what was sent."""
    batch_id = payout_batch_id(event.memo)
    batch = session.get(PayoutBatch, batch_id, with_for_update=True) if batch_id else None
    transfer = (
        session.scalars(
            select(PayoutTransfer).where(
                PayoutTransfer.batch_id == batch.id,
                PayoutTransfer.signature == event.signature,
                PayoutTransfer.instruction_index == event.instruction_index,
            )
        ).one_or_none()
        if batch is not None
        else None
    )
    if (
        batch is None
        or transfer is None
        or transfer.amount != event.amount
        or event.mint != batch.mint_address
        or event.destination != _token_account(transfer.recipient_wallet, batch.mint_address, event.program)
    ):
        log.warning(
            "indexer.payout_unmatched",
            extra={"signature": event.signature, "instruction_index": event.instruction_index, "memo": event.memo},
        )
        return
    transfer.status, transfer.slot = "finalized", slot
    session.execute(
        update(ChainSend)
        .where(ChainSend.signature == event.signature, ChainSend.status.in_(("pending", "confirmed")))
        .values(status="finalized", slot=slot, updated_at=func.now())
    )
    session.flush()
    if all(t.status == "finalized" for t in batch.transfers):
        batch.status, batch.error_code, batch.error_message = "finalized", None, None


def _token_account(wallet: str, mint: str, program: str) -> str:
    return str(
        get_associated_token_address(Pubkey.from_string(wallet), Pubkey.from_string(mint), Pubkey.from_string(program))
    )


def finalize(session: Session, signatures: Sequence[str], settings: Settings) -> list[str]:
    """Mark rows finalized (once) and apply their finalized effects; returns the rows that changed."""
    if not signatures:
        return []
    changed: list[tuple[str, int]] = list(
        session.execute(
            update(IndexedTransaction)
            .where(IndexedTransaction.signature.in_(signatures), IndexedTransaction.status == "confirmed")
            .values(status="finalized", updated_at=func.now())
            .returning(IndexedTransaction.signature, IndexedTransaction.slot)
        )
    )
    slots = dict(changed)
    payouts = session.scalars(
        select(ChainEvent)
        .where(ChainEvent.signature.in_(slots), ChainEvent.kind == "token_transfer")
        .order_by(ChainEvent.signature, ChainEvent.instruction_index)
    ).all()
    for event in payouts:
        _payout_finalized(session, event, slots[event.signature])
    _book(session, list(slots), settings)
    return list(slots)


def remove(session: Session, signatures: Sequence[str]) -> list[str]:
    """Forget unfinalized transactions a fork dropped, newest first, undoing their effects."""
    rows = session.scalars(
        select(IndexedTransaction)
        .where(IndexedTransaction.signature.in_(signatures), IndexedTransaction.status == "confirmed")
        .order_by(IndexedTransaction.slot.desc(), IndexedTransaction.created_at.desc())
        .with_for_update()
    ).all()
    for row in rows:
        events = session.scalars(select(ChainEvent).where(ChainEvent.signature == row.signature)).all()
        for event in sorted(events, key=lambda e: e.instruction_index, reverse=True):
            if event.kind == "nft_transfer" and event.previous_owner is not None:
                session.execute(
                    update(Nft)
                    .where(Nft.mint_address == event.mint, Nft.owner_wallet == event.owner)
                    .values(owner_wallet=event.previous_owner)
                )
        session.delete(row)
        log.warning("indexer.forked_out", extra={"signature": row.signature, "slot": row.slot})
    session.flush()
    return [row.signature for row in rows]


def unfinalized(session: Session, limit: int) -> list[tuple[str, int]]:
    """The confirmed tail to re-check: (signature, slot), oldest first."""
    rows = session.execute(
        select(IndexedTransaction.signature, IndexedTransaction.slot)
        .where(IndexedTransaction.status == "confirmed")
        .order_by(IndexedTransaction.slot)
        .limit(limit)
    ).all()
    return [(signature, slot) for signature, slot in rows]


def known(session: Session, signatures: Sequence[str]) -> set[str]:
    """Which of these transactions are already indexed (read through another address, or an earlier pass)."""
    if not signatures:
        return set()
    return set(
        session.scalars(select(IndexedTransaction.signature).where(IndexedTransaction.signature.in_(signatures)))
    )


def our_nft_mints(session: Session, mints: set[str]) -> frozenset[str]:
    if not mints:
        return frozenset()
    return frozenset(session.scalars(select(Nft.mint_address).where(Nft.mint_address.in_(mints))).all())  # type: ignore[arg-type]


def cursor(session: Session, address: str) -> IndexerCursor | None:
    return session.get(IndexerCursor, address)


def advance(
    session: Session,
    address: str,
    *,
    signature: str | None = None,
    slot: int | None = None,
    head_slot: int | None = None,
) -> None:
    """Move an address's cursor: to the newest finalized transaction read, and/or the confirmed slot reached."""
    values: dict[str, object] = {"updated_at": func.now()}
    if signature is not None:
        values |= {"signature": signature, "slot": slot}
    if head_slot is not None:
        values["head_slot"] = head_slot
    session.execute(
        insert(IndexerCursor)
        .values(address=address, **{k: v for k, v in values.items() if k != "updated_at"})
        .on_conflict_do_update(index_elements=[IndexerCursor.address], set_=values)
    )


def indexed_slot(session: Session, addresses: Sequence[str]) -> int | None:
    """The confirmed slot up to which every one of these addresses is read (None: one was never read)."""
    heads = session.execute(
        select(IndexerCursor.address, IndexerCursor.head_slot).where(IndexerCursor.address.in_(addresses))
    ).all()
    if len(heads) < len(set(addresses)) or any(head is None for _, head in heads):
        return None
    return min(head for _, head in heads if head is not None)


def overview(session: Session, addresses: Sequence[str]) -> dict[str, Any]:
    """Cursors of the watched addresses, and how many rows wait for finality or are poison."""
    cursors = {c.address: c for c in session.scalars(select(IndexerCursor).where(IndexerCursor.address.in_(addresses)))}
    by_status = select(IndexedTransaction.status, func.count()).group_by(IndexedTransaction.status)
    counts: dict[str, int] = dict(session.execute(by_status).tuples().all())
    poison = session.scalar(select(func.count()).where(IndexedTransaction.error.is_not(None))) or 0
    facts = {
        name: dict(session.execute(select(table.status, func.count()).group_by(table.status)).tuples().all())
        for name, table in (("stake_deposits", IndexedDeposit), ("sales", IndexedSale))
    }
    return {
        "indexed_slot": indexed_slot(session, addresses),
        "unfinalized": counts.get("confirmed", 0),
        "finalized": counts.get("finalized", 0),
        "poison": poison,
        **facts,
        "refused": refused(session, REFUSED_SHOWN),
        "addresses": [
            {
                "address": address,
                "cursor_signature": cursors[address].signature if address in cursors else None,
                "cursor_slot": cursors[address].slot if address in cursors else None,
                "head_slot": cursors[address].head_slot if address in cursors else None,
            }
            for address in addresses
        ],
    }


#: How many refused deposits and sales ``roadie indexer status`` lists.
REFUSED_SHOWN = 20


def refused(session: Session, limit: int) -> list[dict[str, Any]]:
    """The newest refused stake deposits and sales, with why: the ones an admin must settle by hand."""
    deposits = select(
        IndexedDeposit.signature, IndexedDeposit.error_code, IndexedDeposit.error_message, IndexedDeposit.created_at
    ).where(IndexedDeposit.status == "refused")
    sales = select(IndexedSale.signature, IndexedSale.error_code, IndexedSale.error_message, IndexedSale.created_at)
    rows = session.execute(
        deposits.add_columns(literal("stake_deposit").label("fact"))
        .union_all(sales.where(IndexedSale.status == "refused").add_columns(literal("sale").label("fact")))
        .order_by(text("created_at DESC"))
        .limit(limit)
    ).all()
    return [
        {"fact": row.fact, "signature": row.signature, "error_code": row.error_code, "error": row.error_message}
        for row in rows
    ]
