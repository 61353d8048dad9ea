"""The chain indexer: reads what happened on chain for the watched addresses into Postgres, fork-aware."""
