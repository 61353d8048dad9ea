"""The job ledger's behaviour: intake, the worker runtime, and the outbox relay."""
