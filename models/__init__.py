"""SQLAlchemy models, by domain: the platform's job ledger and the music service's data."""

from models.base import Base
from models.chain import ChainSend, PayoutBatch, PayoutTransfer
from models.indexer import ChainEvent, IndexedTransaction, IndexerCursor
from models.ledger import (
    LedgerAccount,
    LedgerEntry,
    LedgerRun,
    LedgerTransaction,
    Payout,
    Play,
    Sale,
    SaleCreator,
    StakingPayout,
)
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
    "ChainEvent",
    "ChainSend",
    "ChainTransaction",
    "IdempotencyKey",
    "IndexedTransaction",
    "IndexerCursor",
    "Job",
    "JobAttempt",
    "JobEvent",
    "JobStatus",
    "LedgerAccount",
    "LedgerEntry",
    "LedgerRun",
    "LedgerTransaction",
    "Nft",
    "NftCollection",
    "NftMetadata",
    "OutboxMessage",
    "Payout",
    "PayoutBatch",
    "PayoutTransfer",
    "Play",
    "Sale",
    "SaleCreator",
    "StakingPayout",
    "StakingPosition",
    "TokenBalance",
    "Track",
    "TrackFile",
    "User",
    "UserSession",
    "UserWallet",
    "Wallet",
]
