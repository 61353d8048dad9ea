"""Tasks by domain. Importing this package declares every job type."""

from tasks import chain, indexer, ingest, ipfs, ledger, media, platform, webhooks

__all__ = ["chain", "indexer", "ingest", "ipfs", "ledger", "media", "platform", "webhooks"]
