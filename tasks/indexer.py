"""Indexer pool job types: reading the chain into Postgres, fork-aware (issue 4).

``indexer.tick`` is a beat task on the single-consumer ``indexer`` queue (a tick every few seconds would only
fill the job ledger); ``indexer.backfill`` is a job, submitted like any other, for a slot range.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from celery import shared_task
from pydantic import BaseModel, Field, model_validator

from roadie.chain.client import connect
from roadie.indexer.metrics import set_lag
from roadie.indexer.runner import Indexer, Report
from roadie.jobs.runtime import JobContext
from roadie.jobs.types import job_type
from roadie.settings import get_settings

log = logging.getLogger(__name__)

#: The widest slot range one backfill job reads (one getBlock per slot).
MAX_BACKFILL_SLOTS = 500_000


class BackfillPayload(BaseModel):
    start_slot: int = Field(ge=0, description="First slot to read.")
    end_slot: int = Field(ge=0, description="Last slot to read (inclusive).")

    @model_validator(mode="after")
    def _a_range(self) -> BackfillPayload:
        if self.end_slot < self.start_slot:
            raise ValueError("end_slot must not be below start_slot")
        if self.end_slot - self.start_slot + 1 > MAX_BACKFILL_SLOTS:
            raise ValueError(f"at most {MAX_BACKFILL_SLOTS} slots per backfill job")
        return self


async def _tick() -> Report:
    settings = get_settings()
    async with connect(settings) as chain:
        return await Indexer(chain, settings).tick()


@shared_task(name="indexer.tick", ignore_result=True, soft_time_limit=300, time_limit=360)
def tick() -> dict[str, Any]:
    """Read new transactions of every watched address; re-check the unfinalized tail."""
    report = asyncio.run(_tick())
    if report.lag_slots is not None:
        set_lag(report.lag_slots)
    if report.read or report.forked or report.finalized or report.poison:
        log.info("indexer.tick", extra=report.as_dict())
    return report.as_dict()


@job_type("indexer.backfill", BackfillPayload, queue="indexer", max_attempts=5, soft_time_limit_s=3600,
          hard_time_limit_s=3660)  # fmt: skip
def backfill(payload: BackfillPayload, context: JobContext) -> dict[str, Any]:
    """Read the finalized blocks of a slot range for transactions of the watched addresses."""
    settings = get_settings()

    async def run() -> Report:
        async with connect(settings) as chain:
            return await Indexer(chain, settings).backfill(payload.start_slot, payload.end_slot, context.progress)

    return asyncio.run(run()).as_dict()
