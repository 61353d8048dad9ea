"""The double-entry ledger and what feeds it: plays, sales, staking payouts, periodic runs and payouts.

Every movement of money is a ``LedgerTransaction`` whose ``LedgerEntry`` rows sum to zero; an account's
balance is the sum of its entries. The database enforces it (migration 0007): a statement that leaves a
transaction unbalanced is refused, entries are append-only, and a trigger keeps ``ledger_accounts.balance``
equal to the sum of the account's entries, where a CHECK forbids a negative balance (except ``external``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    Integer,
    SmallInteger,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, TokenAmount, created_at, updated_at, uuid_pk

#: external: the world outside the books (sale proceeds, stake deposits, what payouts sent); the only
#: account that may go negative. treasury: funds rewards and interest. clearing: payouts on their way to
#: the chain. Per user: rewards (listening), royalties (sales), staking (interest, released principal),
#: stake (principal held while staked).
SYSTEM_ACCOUNTS = ("external", "treasury", "clearing")
USER_ACCOUNTS = ("rewards", "royalties", "staking", "stake")
ACCOUNT_KINDS = SYSTEM_ACCOUNTS + USER_ACCOUNTS
#: The account kinds paid out to wallets, each by the periodic run of the same name.
PAYABLE_KINDS = ("rewards", "royalties", "staking")
RUN_KINDS = PAYABLE_KINDS
TRANSACTION_KINDS = (
    "funding",
    "rewards",
    "royalties",
    "staking",
    "stake",
    "unstake",
    "payout",
    "payout_settled",
)
PAYOUT_STATUSES = ("pending", "submitted", "confirmed", "finalized", "failed")
SALE_SOURCES = ("api", "indexer")


def _in_list(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class LedgerAccount(Base):
    """An account: one per system kind, one per user and user kind. ``balance`` is kept by a trigger."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        UniqueConstraint("kind", "user_id", postgresql_nulls_not_distinct=True),
        CheckConstraint(_in_list("kind", ACCOUNT_KINDS), name="known_kind"),
        CheckConstraint(f"(user_id IS NULL) = ({_in_list('kind', SYSTEM_ACCOUNTS)})", name="owner_matches_kind"),
        CheckConstraint("balance >= 0 OR kind = 'external'", name="balance_not_negative"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    # RESTRICT: a user with money in the books is not deleted.
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    balance: Mapped[int] = mapped_column(TokenAmount, default=0, server_default=text("0"))
    created_at: Mapped[dt.datetime] = created_at()


class LedgerRun(Base):
    """One period of a periodic money job, done: the row is written in the transaction that did the work."""

    __tablename__ = "ledger_runs"
    __table_args__ = (
        UniqueConstraint("kind", "period_start"),
        CheckConstraint(_in_list("kind", RUN_KINDS), name="known_kind"),
        CheckConstraint("period_end > period_start", name="period_not_empty"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    period_start: Mapped[dt.datetime]
    period_end: Mapped[dt.datetime]
    result: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime] = created_at()


class LedgerTransaction(Base):
    """A balanced movement of money; its unique key makes the movement happen once."""

    __tablename__ = "ledger_transactions"
    __table_args__ = (CheckConstraint(_in_list("kind", TRANSACTION_KINDS), name="known_kind"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_runs.id", ondelete="RESTRICT"), index=True)
    effective_at: Mapped[dt.datetime]
    memo: Mapped[dict[str, Any] | None]
    created_at: Mapped[dt.datetime] = created_at()


class LedgerEntry(Base):
    """One leg of a transaction: a signed amount (positive: credit) on one account, at most one per account."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        UniqueConstraint("transaction_id", "account_id"),
        CheckConstraint("amount <> 0", name="amount_not_zero"),
        Index("ix_ledger_entries_account_id_id", "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.id", ondelete="RESTRICT"))
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id", ondelete="RESTRICT"))
    amount: Mapped[int] = mapped_column(TokenAmount)


class Play(Base):
    """A listening event, stored once per client event id; the rewards run of its period marks it."""

    __tablename__ = "plays"
    __table_args__ = (
        CheckConstraint("ms_listened >= 0", name="ms_listened_not_negative"),
        CheckConstraint("(run_id IS NULL) = (counted IS NULL)", name="counted_once_accrued"),
        Index("ix_plays_unaccrued_received_at", "received_at", postgresql_where=text("run_id IS NULL")),
        Index("ix_plays_counted_listener_day", "listener_id", "started_at", postgresql_where=text("counted")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    listener_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    track_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tracks.id", ondelete="RESTRICT"), index=True)
    started_at: Mapped[dt.datetime]
    ms_listened: Mapped[int] = mapped_column(Integer)
    client: Mapped[str] = mapped_column(String(64))
    api_client_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_clients.id", ondelete="SET NULL"))
    received_at: Mapped[dt.datetime]
    run_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_runs.id", ondelete="RESTRICT"))
    counted: Mapped[bool | None]


class Sale(Base):
    """An NFT sale and its royalty, ``floor(price * seller_fee_basis_points / 10000)`` (a CHECK)."""

    __tablename__ = "sales"
    __table_args__ = (
        CheckConstraint("price >= 0", name="price_not_negative"),
        CheckConstraint("seller_fee_basis_points BETWEEN 0 AND 10000", name="seller_fee_is_bps"),
        CheckConstraint("royalty = div(price * seller_fee_basis_points, 10000)", name="royalty_is_floor_of_fee"),
        CheckConstraint(_in_list("source", SALE_SOURCES), name="known_source"),
        Index("ix_sales_undistributed_recorded_at", "recorded_at", postgresql_where=text("run_id IS NULL")),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    signature: Mapped[str] = mapped_column(String(88), unique=True)
    nft_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("nfts.id", ondelete="RESTRICT"), index=True)
    price: Mapped[int] = mapped_column(TokenAmount)
    seller_fee_basis_points: Mapped[int] = mapped_column(Integer)
    royalty: Mapped[int] = mapped_column(TokenAmount)
    sold_at: Mapped[dt.datetime]
    source: Mapped[str] = mapped_column(String(16))
    recorded_at: Mapped[dt.datetime]
    run_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_runs.id", ondelete="RESTRICT"), index=True)


class SaleCreator(Base):
    """A creator's share (integer percent) of a sale's royalty and the part it gets by largest remainder.

    A deferred trigger refuses a sale whose shares do not sum to 100 or whose parts do not sum to the royalty.
    """

    __tablename__ = "sale_creators"
    __table_args__ = (
        CheckConstraint("share BETWEEN 0 AND 100", name="share_is_percent"),
        CheckConstraint("amount >= 0", name="amount_not_negative"),
    )

    sale_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sales.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), primary_key=True)
    share: Mapped[int] = mapped_column(SmallInteger)
    amount: Mapped[int] = mapped_column(TokenAmount)


class StakingPayout(Base):
    """Interest of one position for one period: at most one row per (position, period_start)."""

    __tablename__ = "staking_payouts"
    __table_args__ = (
        UniqueConstraint("position_id", "period_start"),
        CheckConstraint("amount >= 0 AND carry_after >= 0", name="amounts_not_negative"),
        CheckConstraint("accrued_to > accrued_from", name="accrued_interval_not_empty"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    position_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staking_positions.id", ondelete="RESTRICT"))
    period_start: Mapped[dt.datetime]
    accrued_from: Mapped[dt.datetime]
    accrued_to: Mapped[dt.datetime]
    amount: Mapped[int] = mapped_column(TokenAmount)
    carry_after: Mapped[int] = mapped_column(TokenAmount)
    transaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("ledger_transactions.id", ondelete="RESTRICT"), index=True
    )


class Payout(Base):
    """An account's balance sent to its wallet: one per account and period, in one chain batch per period.

    ``amount`` left the account for ``clearing`` when the row was made; it reaches ``external`` (paid)
    only when the chain transfer is finalized.
    """

    __tablename__ = "payouts"
    __table_args__ = (
        UniqueConstraint("account_id", "period_start"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(_in_list("status", PAYOUT_STATUSES), name="known_status"),
        CheckConstraint("(status = 'finalized') = (settled_transaction_id IS NOT NULL)", name="paid_when_finalized"),
        Index("ix_payouts_status", "status"),
        Index("ix_payouts_period_start", "period_start"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id", ondelete="RESTRICT"))
    kind: Mapped[str] = mapped_column(String(16))
    period_start: Mapped[dt.datetime]
    amount: Mapped[int] = mapped_column(TokenAmount)
    wallet: Mapped[str] = mapped_column(String(64))
    batch_key: Mapped[str] = mapped_column(String(100), index=True)
    # The chain batch paying it (roadie.chain.transfers); its transfer to ``wallet`` in that batch is this payout's.
    batch_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("payout_batches.id", ondelete="RESTRICT"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    transaction_id: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.id", ondelete="RESTRICT"))
    settled_transaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("ledger_transactions.id", ondelete="RESTRICT"), unique=True
    )
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()


class PayoutHold(Base):
    """An account whose balance is owed but not paid, because its wallet cannot receive (an admin must look).

    The money run pays everyone else; the balance stays on the account, and the hold goes once a run pays it
    (after the user links a wallet that can receive).
    """

    __tablename__ = "payout_holds"

    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id", ondelete="RESTRICT"), primary_key=True)
    wallet: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(300))
    last_period_start: Mapped[dt.datetime]
    held_since: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()
