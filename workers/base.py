"""Every job type becomes a Celery task whose body is the ledger runtime around its handler."""

from __future__ import annotations

import logging
import time
import uuid

from celery import Celery, Task
from celery.exceptions import Retry
from sqlalchemy import text

from roadie.db import transaction
from roadie.jobs.runtime import Dropped, execute
from roadie.jobs.types import JobType, job_types
from workers import telemetry

log = logging.getLogger("workers.job")

#: The log event of each kind of dropped delivery, and its level: a refused outcome means a worker
#: stalled or was cut off long enough to be presumed dead, which an operator wants to see.
_DROPPED_EVENTS: dict[Dropped, tuple[int, str]] = {
    Dropped.DUPLICATE: (logging.INFO, "job.duplicate_delivery"),
    Dropped.LEASE_LOST: (logging.WARNING, "job.outcome_refused_lease_lost"),
    Dropped.NOT_RUN: (logging.INFO, "job.delivery_not_run"),
    Dropped.PAUSED: (logging.INFO, "job.held_paused"),
}


class JobFailedError(Exception):
    """The job failed in the ledger: Celery reports the task as FAILURE, with the job's error code and message."""


class JobCancelledError(Exception):
    """The job was cancelled in the ledger: Celery reports it as a FAILURE labelled cancelled."""


class LedgerTask(Task):  # type: ignore[misc]  # Celery's Task is untyped
    """Claims the job in the ledger, runs the handler with a heartbeat, records the outcome.

    The outcome the ledger recorded is also what the task reports, so that Flower (which sees only
    Celery's task events) tells the truth: a failed job is a FAILURE, a job to be retried a RETRY, a
    cancelled one a FAILURE labelled cancelled. These are expected outcomes (``throws``): Celery would
    log them at INFO without a traceback, and its per-task INFO lines are off. The message is
    acknowledged either way; the retry itself is scheduled through the outbox, not by Celery.
    """

    job_type: JobType
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    throws = (JobFailedError, JobCancelledError)


#: The failure a finished job's task reports, read only for the outcomes that are not a success.
_OUTCOME = text("SELECT error_code, error_message, next_attempt_at FROM jobs WHERE id = :id")


def _report(status: str, job_id: uuid.UUID) -> None:
    """Raise what tells Celery, and so Flower, how the job ended when it did not succeed."""
    if status not in ("failed", "retrying", "cancelled"):
        return
    with transaction() as session:
        code, message, next_attempt_at = session.execute(_OUTCOME, {"id": job_id}).one()
    what = f"{code or status}: {message or status}"
    if status == "failed":
        raise JobFailedError(what)
    if status == "cancelled":
        raise JobCancelledError(f"cancelled: {what}")
    raise Retry(what, when=next_attempt_at)


def _run(self: LedgerTask, job_id: str) -> str:
    started = time.monotonic()
    try:
        status = execute(self.job_type, uuid.UUID(job_id), message_id=self.request.id, worker=self.request.hostname)
    except Exception:
        telemetry.observe(self.job_type.name, "error", time.monotonic() - started)
        raise
    elapsed = time.monotonic() - started
    if isinstance(status, Dropped):
        telemetry.count_dropped(self.job_type.name, status.value)
        level, event = _DROPPED_EVENTS[status]
        log.log(level, event, extra={"job_type": self.job_type.name, "duration_ms": round(elapsed * 1000, 2)})
    elif (outcome := telemetry.outcome_of(status)) is not None:
        telemetry.observe(self.job_type.name, outcome, elapsed)
        log.info(f"job.{outcome}", extra={"job_type": self.job_type.name, "duration_ms": round(elapsed * 1000, 2)})
        _report(status, uuid.UUID(job_id))
    return status


def bind_job_types(app: Celery) -> None:
    """Register one task per declared job type, named after the type, with its time limits."""
    for job_type in job_types().values():
        app.task(
            _run,
            name=job_type.name,
            base=LedgerTask,
            bind=True,
            job_type=job_type,
            queue=job_type.queue,
            soft_time_limit=job_type.soft_time_limit_s,
            time_limit=job_type.hard_time_limit_s,
        )
