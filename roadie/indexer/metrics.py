"""The indexer's lag as a worker metric: ``roadie_indexer_lag_slots``.

The tick runs in a pool child of the worker, whose metrics are in prometheus_client's multiprocess mode
(``workers/telemetry.py``); the gauge is made on first use in that child, so its value is written to the
shared folder the worker's main process serves. ``mostrecent``: the worker shows the value of the newest
tick, whichever child ran it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _lag_gauge() -> Any:
    from prometheus_client import Gauge

    return Gauge(
        "roadie_indexer_lag_slots",
        "Chain slot (confirmed) minus the slot every watched address is indexed up to, as of the last tick.",
        multiprocess_mode="mostrecent",
        registry=None,
    )


def set_lag(slots: int) -> None:
    _lag_gauge().set(slots)
