"""The Celery runtime: one app, one queue per pool, and the ledger-aware base task."""
