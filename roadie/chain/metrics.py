"""What the platform's transactions cost, as a worker metric: ``roadie_chain_fee_lamports{purpose}``.

One observation per mint and per payout batch when it is finalized: the lamports its transactions paid
(``meta.fee``, summed over every transaction of it that landed, a failed one included, since a failed
transaction pays too). ``_sum / _count`` is the mean fee per mint or per batch. The histogram is made on
first use in the pool child that runs the job, so it is written to the multiprocess folder the worker's
main process serves (``workers/telemetry.py``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

#: Lamports: the 5,000 of one signature up to 0.01 SOL.
FEE_BUCKETS = (5_000, 10_000, 15_000, 25_000, 50_000, 100_000, 250_000, 1_000_000, 10_000_000)


@lru_cache(maxsize=1)
def _fee_histogram() -> Any:
    from prometheus_client import Histogram

    return Histogram(
        "roadie_chain_fee_lamports",
        "Lamports paid in transaction fees per finalized mint (purpose=nft_mint) or payout batch (purpose=payout).",
        ["purpose"],
        buckets=FEE_BUCKETS,
        registry=None,
    )


def observe_fee(purpose: str, lamports: int) -> None:
    _fee_histogram().labels(purpose).observe(lamports)
