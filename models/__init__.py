"""SQLAlchemy models, by domain: the platform's job ledger and the music service's data."""

from models.base import Base
from models.chain import ChainSend, PayoutBatch, PayoutTransfer
from models.music import (
    ChainTransaction,
    Nft,
    NftCollection,
    NftMetadata,
    StakingPosition,
    TokenBalance,
    Track,
    TrackFile,
    User,
    UserSession,
    UserWallet,
    Wallet,
)
from models.platform import ApiClient, IdempotencyKey, Job, JobAttempt, JobEvent, JobStatus, OutboxMessage

__all__ = [
    "ApiClient",
    "Base",
    "ChainSend",
    "ChainTransaction",
    "IdempotencyKey",
    "Job",
    "JobAttempt",
    "JobEvent",
    "JobStatus",
    "Nft",
    "NftCollection",
    "NftMetadata",
    "OutboxMessage",
    "PayoutBatch",
    "PayoutTransfer",
    "StakingPosition",
    "TokenBalance",
    "Track",
    "TrackFile",
    "User",
    "UserSession",
    "UserWallet",
    "Wallet",
]
