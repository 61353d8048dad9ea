"""What the chain indexer has read: a durable cursor per watched address, the transactions it indexed, their events.

Finality is a property of a transaction, so slot, block time and status (``confirmed`` until the slot is rooted,
then ``finalized``) live on its ``indexed_transactions`` row; its decoded events hang off it, keyed by
(signature, instruction index), and go with it when a fork removes it. A transaction the decoder could not read
is kept as a poison row with its error and no events.

Stake deposits and escrow sales are facts of an indexed transaction too (and go with it): ``pending`` while it is
only confirmed, ``booked`` once it is finalized and the ledger holds them, or ``refused`` with the reason.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, TokenAmount, created_at, updated_at
from models.music import _in_list

INDEXED_STATUSES = ("confirmed", "finalized")
#: The kinds ``roadie.indexer.decode`` emits.
EVENT_KINDS = ("nft_mint", "nft_transfer", "token_transfer", "stake_deposit", "payment", "memo")
#: pending: read at confirmed, not money yet; booked: in the ledger (finalized); refused: kept for an admin.
FACT_STATUSES = ("pending", "booked", "refused")


class IndexerCursor(Base):
    """How far the indexer has read one watched address.

    ``signature``/``slot`` is the newest *finalized* transaction read, where the next page stops (a finalized
    signature cannot be forked away). ``head_slot`` is the confirmed slot the last complete pass reached: the
    indexer's lag is the chain's slot minus the smallest head slot.
    """

    __tablename__ = "indexer_cursors"
    __table_args__ = (
        CheckConstraint("slot >= 0 AND head_slot >= 0", name="slots_not_negative"),
        CheckConstraint("(signature IS NULL) = (slot IS NULL)", name="signature_has_slot"),
    )

    address: Mapped[str] = mapped_column(String(44), primary_key=True)
    signature: Mapped[str | None] = mapped_column(String(88))
    slot: Mapped[int | None]
    head_slot: Mapped[int | None]
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()


class IndexedTransaction(Base):
    """A transaction the indexer read at ``confirmed``; ``error`` set means poison (read, not understood)."""

    __tablename__ = "indexed_transactions"
    __table_args__ = (
        CheckConstraint(_in_list("status", INDEXED_STATUSES), name="known_status"),
        CheckConstraint("slot >= 0", name="slot_not_negative"),
        Index("ix_indexed_transactions_unfinalized", "slot", postgresql_where=text("status = 'confirmed'")),
        Index("ix_indexed_transactions_poison", "slot", postgresql_where=text("error IS NOT NULL")),
    )

    signature: Mapped[str] = mapped_column(String(88), primary_key=True)
    slot: Mapped[int]
    block_time: Mapped[dt.datetime | None]
    status: Mapped[str] = mapped_column(String(16))
    succeeded: Mapped[bool] = mapped_column(comment="False: the transaction failed on chain and changed nothing.")
    error: Mapped[str | None] = mapped_column(Text, comment="Why the decoder refused it (a poison row).")
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()


class ChainEvent(Base):
    """One decoded instruction of an indexed transaction. Token accounts are source/destination; ``owner`` is the
    wallet that received; ``previous_owner`` is what an NFT transfer replaced, so a fork can put it back."""

    __tablename__ = "chain_events"
    __table_args__ = (
        CheckConstraint(_in_list("kind", EVENT_KINDS), name="known_kind"),
        CheckConstraint("instruction_index >= 0", name="instruction_index_not_negative"),
        CheckConstraint("amount >= 0", name="amount_not_negative"),
        Index("ix_chain_events_mint_kind", "mint", "kind"),
    )

    signature: Mapped[str] = mapped_column(
        String(88), ForeignKey("indexed_transactions.signature", ondelete="CASCADE"), primary_key=True
    )
    instruction_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    program: Mapped[str] = mapped_column(String(44))
    mint: Mapped[str | None] = mapped_column(String(44))
    source: Mapped[str | None] = mapped_column(String(44))
    destination: Mapped[str | None] = mapped_column(String(44))
    authority: Mapped[str | None] = mapped_column(String(44))
    owner: Mapped[str | None] = mapped_column(String(44))
    previous_owner: Mapped[str | None] = mapped_column(String(44))
    amount: Mapped[int | None] = mapped_column(TokenAmount)
    memo: Mapped[str | None] = mapped_column(Text)


class _Fact:
    """What stake deposits and sales share: the transaction they are part of (and go with), and whether the
    ledger holds them."""

    signature: Mapped[str] = mapped_column(
        String(88), ForeignKey("indexed_transactions.signature", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()


def _fact_checks(booked_link: str) -> tuple[CheckConstraint, ...]:
    return (
        CheckConstraint(_in_list("status", FACT_STATUSES), name="known_status"),
        CheckConstraint(f"(status = 'booked') = ({booked_link} IS NOT NULL)", name="booked_is_linked"),
        CheckConstraint("(status = 'refused') = (error_code IS NOT NULL)", name="refused_has_error"),
    )


class IndexedDeposit(_Fact, Base):
    """A ``transfer_checked`` into the staking vault, the terms its memo names, and the position it opened.

    One row per (signature, instruction): the position is opened once, when the transaction is finalized.
    A memo that does not parse refuses the deposit at once (``invalid_memo``), for an admin to settle by hand.
    """

    __tablename__ = "indexed_deposits"
    __table_args__ = (
        *_fact_checks("position_id"),
        CheckConstraint("amount >= 0", name="amount_not_negative"),
        Index("ix_indexed_deposits_unsettled", "status", postgresql_where=text("status <> 'booked'")),
    )

    instruction_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    wallet: Mapped[str] = mapped_column(String(44), comment="The staker: the transfer's signing authority.")
    mint: Mapped[str] = mapped_column(String(44))
    amount: Mapped[int] = mapped_column(TokenAmount)
    memo: Mapped[str | None] = mapped_column(Text)
    rate_bps: Mapped[int | None] = mapped_column(Integer)
    rate_kind: Mapped[str | None] = mapped_column(String(3))
    lock_seconds: Mapped[int | None]
    position_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("staking_positions.id", ondelete="RESTRICT"), unique=True
    )


class IndexedSale(_Fact, Base):
    """An escrow settlement: the NFT handed to the buyer and the buyer's payment to the seller, and the sale
    recorded from it once the transaction is finalized."""

    __tablename__ = "indexed_sales"
    __table_args__ = (
        *_fact_checks("sale_id"),
        CheckConstraint("price >= 0", name="price_not_negative"),
        Index("ix_indexed_sales_unsettled", "status", postgresql_where=text("status <> 'booked'")),
    )

    nft_mint: Mapped[str] = mapped_column(String(44))
    buyer: Mapped[str | None] = mapped_column(String(44))
    seller: Mapped[str | None] = mapped_column(String(44))
    payment_mint: Mapped[str | None] = mapped_column(String(44))
    price: Mapped[int | None] = mapped_column(TokenAmount)
    sale_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("sales.id", ondelete="RESTRICT"), unique=True)
