"""The platform's own job type, ``platform.echo``, and retention's run; the rest of housekeeping runs
inside beat (``schedules/beat.py``)."""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from celery import shared_task
from pydantic import BaseModel, ConfigDict, Field

from roadie.jobs import retention
from roadie.jobs.errors import PermanentError, TransientError
from roadie.jobs.runtime import JobContext
from roadie.jobs.types import job_type

log = logging.getLogger(__name__)


class EchoPayload(BaseModel):
    """Any JSON object; these optional fields rehearse slow and failing jobs."""

    model_config = ConfigDict(extra="allow")

    sleep_ms: int = Field(default=0, ge=0, le=600_000, description="Sleep this long before answering.")
    fail: Literal["permanent", "transient"] | None = Field(default=None, description="Fail this way.")
    fail_times: int | None = Field(
        default=None, ge=1, le=100, description="Fail only the job's first N attempts, re-runs included (default: all)."
    )


@job_type(
    "platform.echo",
    EchoPayload,
    queue="default",
    max_attempts=5,
    soft_time_limit_s=660,
    hard_time_limit_s=720,
    scope="jobs:rehearse",  # it can hold a worker for 10 minutes on purpose: not for every upstream app
)
def echo(payload: EchoPayload, context: JobContext) -> dict[str, Any]:
    """Return the payload as the result, after an optional sleep or a rehearsed failure."""
    deadline = time.monotonic() + payload.sleep_ms / 1000
    while (left := deadline - time.monotonic()) > 0:
        context.raise_if_cancelled()
        time.sleep(min(left, 0.1))
    if payload.fail and (payload.fail_times is None or context.attempt <= payload.fail_times):
        error = TransientError if payload.fail == "transient" else PermanentError
        raise error(f"rehearsed {payload.fail} failure on attempt {context.attempt}", code=f"echo_{payload.fail}")
    result = payload.model_dump(mode="json", exclude_unset=True)
    # At DEBUG: a no-op job should not cost a log line. Redacted like every line: secrets never reach the log.
    log.debug("echo.payload", extra={"payload": result})
    return result


@shared_task(name="platform.purge_finished_jobs", ignore_result=True, soft_time_limit=300, time_limit=360)
def purge_finished_jobs() -> int:
    """Beat's retention run on a worker, not in beat: a minute of deleting must not delay the money schedules."""
    return retention.purge_finished_jobs().jobs
