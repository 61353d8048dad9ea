"""What the chain pool sends: the send-once journal of signed transactions, and payout batches.

A signed transaction is written to ``chain_sends`` (with its last valid block height) before it is
sent, so a retry can always tell whether it landed, may still land, or can never land. Payout
transfers are grouped in batches with a unique key; the ledger counts a transfer as paid only once
it is ``finalized``.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, TokenAmount, created_at, updated_at, uuid_pk
from models.music import _in_list

SEND_PURPOSES = ("nft_mint", "payout")
#: pending: signed and perhaps sent; expired: its blockhash is past finality and it never landed.
SEND_STATUSES = ("pending", "confirmed", "finalized", "failed", "expired")
PAYOUT_STATUSES = ("pending", "submitted", "confirmed", "finalized", "failed")


class ChainSend(Base):
    """One signed transaction of the send-once journal, committed before it is sent."""

    __tablename__ = "chain_sends"
    __table_args__ = (
        CheckConstraint(_in_list("purpose", SEND_PURPOSES), name="known_purpose"),
        CheckConstraint(_in_list("status", SEND_STATUSES), name="known_status"),
        CheckConstraint("(purpose = 'nft_mint') = (nft_id IS NOT NULL)", name="mint_has_nft"),
        CheckConstraint("(purpose = 'payout') = (batch_id IS NOT NULL)", name="payout_has_batch"),
        CheckConstraint("octet_length(signed_transaction) <= 1232", name="fits_a_packet"),
        CheckConstraint("slot >= 0", name="slot_not_negative"),
        CheckConstraint("fee_lamports >= 0", name="fee_not_negative"),
        CheckConstraint("status NOT IN ('confirmed', 'finalized') OR slot IS NOT NULL", name="landed_has_slot"),
        # At most one transaction of an NFT may be in flight: a second can only be built once the first expired.
        Index("uq_chain_sends_pending_nft", "nft_id", unique=True, postgresql_where=text("status = 'pending'")),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    purpose: Mapped[str] = mapped_column(String(16))
    nft_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("nfts.id", ondelete="RESTRICT"), index=True)
    batch_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("payout_batches.id", ondelete="RESTRICT"), index=True)
    signature: Mapped[str] = mapped_column(String(88), unique=True)
    signed_transaction: Mapped[bytes] = mapped_column(
        LargeBinary, comment="The exact bytes sent (and re-sent); signatures only, no secret."
    )
    last_valid_block_height: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending", index=True)
    slot: Mapped[int | None]
    fee_lamports: Mapped[int | None] = mapped_column(
        comment="What it paid once landed (meta.fee): signatures plus compute-unit limit x price."
    )
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()


class PayoutBatch(Base):
    """Token transfers from the treasury recorded together under one unique key (e.g. ``rewards:2026-11-22``)."""

    __tablename__ = "payout_batches"
    __table_args__ = (
        CheckConstraint(_in_list("status", PAYOUT_STATUSES), name="known_status"),
        CheckConstraint("total > 0", name="total_positive"),
        CheckConstraint("status <> 'failed' OR error_code IS NOT NULL", name="failed_has_error"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    key: Mapped[str] = mapped_column(String(200), unique=True)
    mint_address: Mapped[str] = mapped_column(String(44))
    total: Mapped[int] = mapped_column(TokenAmount, comment="Sum of the transfers, base units of mint_address.")
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending", index=True)
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()

    transfers: Mapped[list[PayoutTransfer]] = relationship(
        back_populates="batch", order_by="PayoutTransfer.created_at, PayoutTransfer.id"
    )


class PayoutTransfer(Base):
    """One recipient's transfer in a batch; paid only when ``finalized``.

    ``signature`` and ``instruction_index`` locate its ``transfer_checked`` on chain (the indexer's key).
    """

    __tablename__ = "payout_transfers"
    __table_args__ = (
        UniqueConstraint("batch_id", "recipient_wallet"),
        UniqueConstraint("signature", "instruction_index"),
        CheckConstraint(_in_list("status", PAYOUT_STATUSES), name="known_status"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(
            "status NOT IN ('submitted', 'confirmed', 'finalized') OR (signature IS NOT NULL AND send_id IS NOT NULL)",
            name="submitted_has_signature",
        ),
        CheckConstraint("slot >= 0", name="slot_not_negative"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    batch_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payout_batches.id", ondelete="RESTRICT"))
    recipient_wallet: Mapped[str] = mapped_column(String(44), index=True)
    amount: Mapped[int] = mapped_column(TokenAmount, comment="Base units of the batch's mint.")
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending", index=True)
    send_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("chain_sends.id", ondelete="RESTRICT"), index=True)
    signature: Mapped[str | None] = mapped_column(String(88), index=True)
    instruction_index: Mapped[int | None] = mapped_column(SmallInteger)
    slot: Mapped[int | None]
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()

    batch: Mapped[PayoutBatch] = relationship(back_populates="transfers")
