"""What the chain indexer has read: a durable cursor per watched address, the transactions it indexed, their events.

Finality is a property of a transaction, so slot, block time and status (``confirmed`` until the slot is rooted,
then ``finalized``) live on its ``indexed_transactions`` row; its decoded events hang off it, keyed by
(signature, instruction index), and go with it when a fork removes it. A transaction the decoder could not read
is kept as a poison row with its error and no events.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, TokenAmount, created_at, updated_at
from models.music import _in_list

INDEXED_STATUSES = ("confirmed", "finalized")
#: The kinds ``roadie.indexer.decode`` emits.
EVENT_KINDS = ("nft_mint", "nft_transfer", "token_transfer", "memo")


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
