"""Garbage-collector settings for the long-running processes: API, relay and workers.

After start-up a process holds a few hundred thousand long-lived objects (SQLAlchemy, pydantic,
Celery and their caches), and every full collection walked them all: under load the API stalled
for ~60 ms once every second or so, which made its p99 latency four times its p50. Freezing what
start-up allocated takes it out of the collector's sight (and, before a fork, keeps the pages shared
with pool children); a larger young-generation threshold makes collections rarer. Request and job
garbage is mostly acyclic and freed by reference counting, so memory use barely changes.
"""

from __future__ import annotations

import gc

#: Allocations between young-generation collections (CPython's default is 700).
YOUNG_GENERATION_THRESHOLD = 10_000


def freeze_startup_heap() -> None:
    """Collect once, then move every surviving object to the permanent generation."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)
