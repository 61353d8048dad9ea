"""The music service's data: users and wallets, tracks and their files, NFTs, chain transactions, tokens, staking.

Translated from the product's Prisma design for PostgreSQL. Every money or token amount is an integer of base
units (lamports, SPL token units) in a ``TokenAmount`` column, never a fraction or a float.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, TokenAmount, created_at, updated_at, uuid_pk

TRACK_STATUSES = ("ingesting", "held", "ready", "failed")
TRACK_FILE_KINDS = (
    "source",
    "mp3_320",
    "mp3_128",
    "opus_96",
    "preview",
    "cover",
    "cover_3000",
    "cover_1000",
    "cover_300",
    "metadata",
    "waveform",
)
DUPLICATE_DECISIONS = ("allow", "hold", "reject")
PIN_STATES = ("pending", "pinned", "unpinned", "failed")
NFT_STATUSES = ("pending", "submitted", "confirmed", "finalized", "failed")
TX_KINDS = ("mint", "transfer", "sale", "stake", "unstake", "payout")
TX_STATUSES = ("pending", "confirmed", "finalized", "failed")
RATE_KINDS = ("apr", "apy")
STAKING_STATUSES = ("active", "unstaked")


def _in_list(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class User(Base):
    """A listener, artist or curator; every identity (email, username, wallet, Telegram) is optional but unique."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = uuid_pk()
    # The unique constraints already index email, wallet_address and telegram_id (Prisma's @@index on them).
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    username: Mapped[str | None] = mapped_column(String(64), unique=True)
    wallet_address: Mapped[str | None] = mapped_column(String(64), unique=True)
    telegram_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    avatar: Mapped[str | None] = mapped_column(String(512))
    bio: Mapped[str | None] = mapped_column(Text)
    is_artist: Mapped[bool] = mapped_column(default=False, server_default=false())
    is_curator: Mapped[bool] = mapped_column(default=False, server_default=false())
    is_admin: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), index=True)
    updated_at: Mapped[dt.datetime] = updated_at()


class Wallet(Base):
    """A blockchain address on some chain; linked to users through user_wallets."""

    __tablename__ = "wallets"

    id: Mapped[uuid.UUID] = uuid_pk()
    address: Mapped[str] = mapped_column(String(64), unique=True)
    chain: Mapped[str] = mapped_column(String(16), comment="'solana', 'ton', 'ethereum', ...")
    provider: Mapped[str | None] = mapped_column(String(32), comment="'phantom', 'tonkeeper', ...")
    is_primary: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()


class UserWallet(Base):
    """Which user controls which wallet (many-to-many); the link goes when either side is deleted."""

    __tablename__ = "user_wallets"
    __table_args__ = (UniqueConstraint("user_id", "wallet_id"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    wallet_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("wallets.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = created_at()


class UserSession(Base):
    """A login session. Only the SHA-256 of its token is stored, so a database leak yields no usable token."""

    __tablename__ = "user_sessions"
    __table_args__ = (CheckConstraint("token_hash ~ '^[0-9a-f]{64}$'", name="token_hash_is_sha256_hex"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()


class Track(Base):
    """A track and what ingest measured about it. Its audio and cover live in track_files; price is base units."""

    __tablename__ = "tracks"
    __table_args__ = (
        CheckConstraint(_in_list("status", TRACK_STATUSES), name="known_status"),
        CheckConstraint("status <> 'ready' OR source_sha256 IS NOT NULL", name="ready_has_source"),
        CheckConstraint("isrc ~ '^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$'", name="isrc_format"),
        CheckConstraint("source_sha256 ~ '^[0-9a-f]{64}$'", name="source_sha256_is_hex"),
        CheckConstraint("duration_ms > 0", name="duration_positive"),
        CheckConstraint("sample_rate > 0", name="sample_rate_positive"),
        CheckConstraint("channels > 0", name="channels_positive"),
        CheckConstraint("bpm > 0", name="bpm_positive"),
        CheckConstraint("preview_start_ms >= 0", name="preview_start_not_negative"),
        CheckConstraint("play_count >= 0 AND like_count >= 0", name="counts_not_negative"),
        CheckConstraint("price >= 0", name="price_not_negative"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    # RESTRICT: an artist with tracks (and maybe minted NFTs) must not disappear silently.
    artist_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    genre: Mapped[str | None] = mapped_column(String(64), index=True)
    isrc: Mapped[str | None] = mapped_column(String(12), unique=True)
    release_date: Mapped[dt.datetime] = mapped_column(server_default=func.now(), index=True)
    price: Mapped[int | None] = mapped_column(TokenAmount, comment="Base units, not a decimal price.")
    is_nft: Mapped[bool] = mapped_column(default=False, server_default=false(), index=True)
    status: Mapped[str] = mapped_column(String(16), default="ingesting", server_default="ingesting")
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"),
        index=True,
        comment="The upload's job: whose client is told of the track's events, and at which callback_url.",
    )
    # Filled by ingest; null while the track is still being ingested.
    source_sha256: Mapped[str | None] = mapped_column(String(64))
    duration_ms: Mapped[int | None]
    sample_rate: Mapped[int | None] = mapped_column(Integer)
    channels: Mapped[int | None] = mapped_column(SmallInteger)
    bpm: Mapped[Decimal | None] = mapped_column(Numeric(6, 1))
    musical_key: Mapped[str | None] = mapped_column(String(16))
    loudness_lufs: Mapped[Decimal | None] = mapped_column(Numeric(6, 2))
    true_peak_dbtp: Mapped[Decimal | None] = mapped_column(Numeric(6, 2))
    gain_db: Mapped[Decimal | None] = mapped_column(Numeric(6, 2))
    waveform: Mapped[dict[str, Any] | None]
    preview_start_ms: Mapped[int | None] = mapped_column(
        Integer, comment="Where the artist's 30-second preview starts; null: a third of the way in."
    )
    loudness_range_lu: Mapped[Decimal | None] = mapped_column(Numeric(6, 2))
    rms_dbfs: Mapped[Decimal | None] = mapped_column(Numeric(6, 2), comment="Mean RMS level; -120 for silence.")
    play_count: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    like_count: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), index=True)
    updated_at: Mapped[dt.datetime] = updated_at()

    artist: Mapped[User] = relationship()
    files: Mapped[list[TrackFile]] = relationship(
        back_populates="track", cascade="all, delete-orphan", passive_deletes=True, order_by="TrackFile.kind"
    )


class TrackFile(Base):
    """One file of a track (source, encodes, preview, cover, metadata), at most one per kind.

    Its bytes are first in the blob store, then pinned on IPFS.
    """

    __tablename__ = "track_files"
    __table_args__ = (
        UniqueConstraint("track_id", "kind"),
        CheckConstraint(_in_list("kind", TRACK_FILE_KINDS), name="known_kind"),
        CheckConstraint(_in_list("pin_state", PIN_STATES), name="known_pin_state"),
        CheckConstraint("size_bytes >= 0", name="size_not_negative"),
        CheckConstraint("sha256 ~ '^[0-9a-f]{64}$'", name="sha256_is_hex"),
        CheckConstraint("pin_state <> 'pinned' OR cid IS NOT NULL", name="pinned_has_cid"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    track_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    storage_key: Mapped[str | None] = mapped_column(
        String(300), comment="Where the bytes are in the blob store (roadie.blobs); null once released."
    )
    sha256: Mapped[str | None] = mapped_column(String(64))
    cid: Mapped[str | None] = mapped_column(String(100), index=True, comment="CIDv1 base32; null until pinned.")
    file_name: Mapped[str | None] = mapped_column(String(255))
    size_bytes: Mapped[int | None]
    mime_type: Mapped[str | None] = mapped_column(String(100))
    pin_state: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()

    track: Mapped[Track] = relationship(back_populates="files")


class TrackFingerprint(Base):
    """A track's Chromaprint fingerprint, its indexed sub-fingerprints, and the earlier track it matched, if any.

    ``hashes`` holds each distinct 28-bit sub-fingerprint once; its GIN index finds the few tracks sharing
    some with an upload (an inverted index, as AcoustID's), and only those are compared in full.
    """

    __tablename__ = "track_fingerprints"
    __table_args__ = (
        CheckConstraint("similarity BETWEEN 0 AND 1", name="similarity_is_fraction"),
        CheckConstraint(_in_list("decision", DUPLICATE_DECISIONS), name="known_decision"),
        CheckConstraint("(decision IS NULL) = (similarity IS NULL)", name="decision_with_similarity"),
        CheckConstraint("octet_length(fingerprint) % 4 = 0", name="fingerprint_is_uint32s"),
        Index("ix_track_fingerprints_hashes", "hashes", postgresql_using="gin"),
    )

    track_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True)
    fingerprint: Mapped[bytes] = mapped_column(BYTEA, comment="Raw Chromaprint items, uint32 little-endian.")
    hashes: Mapped[list[int]] = mapped_column(ARRAY(Integer), comment="Distinct top 28 bits of the items.")
    # SET NULL on delete: the match is history; a deleted original no longer holds anything back.
    matched_track_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tracks.id", ondelete="SET NULL"))
    similarity: Mapped[Decimal | None] = mapped_column(Numeric(4, 3))
    decision: Mapped[str | None] = mapped_column(String(8), comment="The duplicate policy applied to the match.")
    created_at: Mapped[dt.datetime] = created_at()


class NftCollection(Base):
    """A Metaplex collection; royalties are basis points (250 = 2.5 %), price is base units."""

    __tablename__ = "nft_collections"
    __table_args__ = (
        CheckConstraint("seller_fee_basis_points BETWEEN 0 AND 10000", name="seller_fee_is_bps"),
        CheckConstraint("total_supply >= 0 AND minted_count >= 0", name="counts_not_negative"),
        CheckConstraint("price >= 0", name="price_not_negative"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    creator_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    mint_address: Mapped[str] = mapped_column(String(44), unique=True, comment="The collection NFT's mint.")
    total_supply: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    minted_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    price: Mapped[int | None] = mapped_column(TokenAmount)
    seller_fee_basis_points: Mapped[int] = mapped_column(Integer, default=250, server_default=text("250"))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    is_active: Mapped[bool] = mapped_column(default=True, server_default=true())
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()


class Nft(Base):
    """The NFT of one track, followed from preparation to finality; the mint is unknown until prepared."""

    __tablename__ = "nfts"
    __table_args__ = (
        CheckConstraint(_in_list("status", NFT_STATUSES), name="known_status"),
        CheckConstraint(
            "status NOT IN ('submitted', 'confirmed', 'finalized')"
            " OR (mint_address IS NOT NULL AND signature IS NOT NULL)",
            name="submitted_has_mint_and_signature",
        ),
        CheckConstraint("slot >= 0", name="slot_not_negative"),
        Index("ix_nfts_unsettled_status", "status", postgresql_where=text("status IN ('pending', 'submitted')")),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    mint_address: Mapped[str | None] = mapped_column(String(44), unique=True)
    # RESTRICT: a minted NFT keeps pointing at its track.
    track_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tracks.id", ondelete="RESTRICT"), unique=True)
    owner_wallet: Mapped[str] = mapped_column(String(44), index=True)
    creator_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    collection_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("nft_collections.id", ondelete="RESTRICT"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    signature: Mapped[str | None] = mapped_column(String(88), unique=True)
    slot: Mapped[int | None]
    metadata_uri: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), index=True)
    updated_at: Mapped[dt.datetime] = updated_at()

    track: Mapped[Track] = relationship()


class NftMetadata(Base):
    """The off-chain metadata JSON of an NFT as pinned to IPFS."""

    __tablename__ = "nft_metadata"

    id: Mapped[uuid.UUID] = uuid_pk()
    nft_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("nfts.id", ondelete="CASCADE"), index=True)
    cid: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    attributes: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    external_url: Mapped[str | None] = mapped_column(String(2048))
    created_at: Mapped[dt.datetime] = created_at()


class ChainTransaction(Base):
    """An on-chain transaction the platform sent or saw.

    amount and fee are base units of mint_address (NULL mint: lamports of native SOL). The references are SET NULL
    on delete: the signature stays, and the chain remains the record of what happened.
    """

    __tablename__ = "chain_transactions"
    __table_args__ = (
        CheckConstraint(_in_list("kind", TX_KINDS), name="known_kind"),
        CheckConstraint(_in_list("status", TX_STATUSES), name="known_status"),
        CheckConstraint("amount >= 0 AND fee >= 0", name="amounts_not_negative"),
        CheckConstraint("slot >= 0", name="slot_not_negative"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    signature: Mapped[str] = mapped_column(String(88), unique=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending", index=True)
    chain: Mapped[str] = mapped_column(String(16), default="solana", server_default="solana")
    nft_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("nfts.id", ondelete="SET NULL"), index=True)
    seller_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    buyer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    mint_address: Mapped[str | None] = mapped_column(String(44))
    amount: Mapped[int | None] = mapped_column(TokenAmount)
    fee: Mapped[int | None] = mapped_column(TokenAmount)
    slot: Mapped[int | None]
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), index=True)
    updated_at: Mapped[dt.datetime] = updated_at()


class TokenBalance(Base):
    """A user's off-chain ledger of one SPL mint, in base units of that mint."""

    __tablename__ = "token_balances"
    __table_args__ = (
        UniqueConstraint("user_id", "mint_address"),
        CheckConstraint("balance >= 0 AND total_earned >= 0 AND total_spent >= 0", name="amounts_not_negative"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    # RESTRICT: a user holding tokens is not deleted by accident.
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    mint_address: Mapped[str] = mapped_column(String(44))
    balance: Mapped[int] = mapped_column(TokenAmount, default=0, server_default=text("0"))
    total_earned: Mapped[int] = mapped_column(TokenAmount, default=0, server_default=text("0"))
    total_spent: Mapped[int] = mapped_column(TokenAmount, default=0, server_default=text("0"))
    last_claimed_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), onupdate=func.now(), index=True)


class StakingPosition(Base):
    """Tokens of one mint staked by a user, in base units.

    Rewards accrue in integers: rate_bps is the yearly rate in basis points (rate_kind says whether it compounds),
    rewards are accrued up to accrued_until, and carry keeps the remainder of the integer division so that no base
    unit is lost to rounding between accruals.
    """

    __tablename__ = "staking_positions"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("rate_bps > 0 AND rate_bps <= 100000", name="rate_bps_range"),
        CheckConstraint(_in_list("rate_kind", RATE_KINDS), name="known_rate_kind"),
        CheckConstraint("lock_seconds >= 0", name="lock_not_negative"),
        CheckConstraint("carry >= 0", name="carry_not_negative"),
        CheckConstraint(
            "rewards >= 0 AND claimed_rewards >= 0 AND claimed_rewards <= rewards", name="rewards_consistent"
        ),
        CheckConstraint(_in_list("status", STAKING_STATUSES), name="known_status"),
        CheckConstraint("(status = 'unstaked') = (unstaked_at IS NOT NULL)", name="unstaked_has_time"),
        CheckConstraint("accrued_until >= started_at", name="accrued_after_start"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    # RESTRICT: staked funds are not deleted with their owner.
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    mint_address: Mapped[str] = mapped_column(String(44))
    amount: Mapped[int] = mapped_column(TokenAmount)
    rate_bps: Mapped[int] = mapped_column(Integer, default=1500, server_default=text("1500"))
    rate_kind: Mapped[str] = mapped_column(String(3), default="apy", server_default="apy")
    lock_seconds: Mapped[int]
    rewards: Mapped[int] = mapped_column(TokenAmount, default=0, server_default=text("0"))
    claimed_rewards: Mapped[int] = mapped_column(TokenAmount, default=0, server_default=text("0"))
    carry: Mapped[int] = mapped_column(TokenAmount, default=0, server_default=text("0"))
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active", index=True)
    started_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), index=True)
    accrued_until: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    unstaked_at: Mapped[dt.datetime | None]
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()
