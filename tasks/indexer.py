"""Indexer pool job types: reading the chain into Postgres, fork-aware (issue 4)."""
