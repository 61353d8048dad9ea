"""What a worker does with one delivered job: claim it, run it with a heartbeat, record the outcome.

Every step is its own short transaction on the job row. A claim hands out a lease; only
the holder of the current lease may record progress or an outcome, so a worker that was
presumed dead and comes back cannot overwrite the work of its successor.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import random
import threading
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from celery.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from models.platform import Job, JobAttempt, JobEvent, JobStatus, OutboxMessage
from roadie.db import transaction
from roadie.jobs.errors import JobCancelled, JobError, TransientError, WaitForChildren
from roadie.jobs.types import JobType
from roadie.settings import get_settings

log = logging.getLogger(__name__)


def is_transient(exc: BaseException) -> bool:
    """Transient failures are retried; everything else fails the job at once."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, JobError):
        return False
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500 or exc.response.status_code == 429
    return isinstance(
        exc, TimeoutError | ConnectionError | SoftTimeLimitExceeded | OperationalError | httpx.TransportError
    )


def backoff_seconds(run_attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter": half the delay is fixed, half is random."""
    ceiling = min(cap, base * 2.0 ** max(run_attempt - 1, 0))
    jitter: float = (rng or random).uniform(0, ceiling / 2)
    return ceiling / 2 + jitter


@dataclass
class JobContext:
    """What a handler may do besides computing its result: report progress, notice cancellation."""

    job_id: uuid.UUID
    lease_id: uuid.UUID
    attempt: int
    run_attempt: int
    _cancel_requested: threading.Event = field(default_factory=threading.Event)

    def progress(self, percent: int, stage: str | None = None) -> None:
        """Record progress in the ledger (clamped to 0..100); raises JobCancelled when asked to stop."""
        with transaction() as session:
            cancel = session.execute(
                update(Job)
                .where(Job.id == self.job_id, Job.lease_id == self.lease_id)
                .values(progress_percent=max(0, min(100, percent)), progress_stage=stage, heartbeat_at=func.now())
                .returning(Job.cancel_requested)
            ).scalar_one_or_none()
        if cancel:
            self._cancel_requested.set()
        self.raise_if_cancelled()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested.is_set()

    def raise_if_cancelled(self) -> None:
        if self._cancel_requested.is_set():
            raise JobCancelled


@dataclass(frozen=True)
class Claim:
    job_id: uuid.UUID
    lease_id: uuid.UUID
    attempt: int
    run_attempt: int
    payload: dict[str, Any]


def _now(session: Session) -> dt.datetime:
    return session.execute(select(func.now())).scalar_one()


def claim(job_id: uuid.UUID, *, message_id: str, worker: str) -> Claim | None:
    """Take the job for this delivery, or return None when the delivery is a duplicate to drop."""
    settings = get_settings()
    with transaction() as session:
        row = session.execute(select(Job, func.now()).where(Job.id == job_id).with_for_update(of=Job)).one_or_none()
        if row is None:
            log.warning("job.unknown", extra={"job_id": str(job_id)})
            return None
        job, now = row
        if job.status in JobStatus.finished():
            return None
        if job.status == JobStatus.RETRYING and job.next_attempt_at and job.next_attempt_at > now:
            return None  # an early duplicate; the outbox sends the due one
        if job.status == JobStatus.RUNNING:
            current = session.scalars(select(JobAttempt).where(JobAttempt.lease_id == job.lease_id)).one_or_none()
            redelivered = current is not None and current.message_id == message_id
            expired = (
                job.heartbeat_at is None or (now - job.heartbeat_at).total_seconds() > settings.heartbeat_timeout_s
            )
            if not (redelivered or expired):
                return None  # another worker holds a live lease
            if current is not None:
                current.outcome, current.finished_at = "lost", now
            if job.run_attempts >= settings.max_deliveries:
                _finish_failed(
                    session,
                    job,
                    now,
                    "worker_lost",
                    f"the worker running this job was lost {job.run_attempts} times",
                    None,
                )
                return None
        if job.cancel_requested:
            job.status, job.finished_at, job.lease_id = JobStatus.CANCELLED, now, None
            session.add(JobEvent(job_id=job.id, kind="cancelled", attempt=job.attempts))
            return None
        lease_id = uuid.uuid4()
        job.attempts += 1
        job.run_attempts += 1
        job.status = JobStatus.RUNNING
        job.lease_id = lease_id
        job.started_at = job.started_at or now
        job.heartbeat_at = now
        job.next_attempt_at = None
        session.add(
            JobAttempt(job_id=job.id, number=job.attempts, lease_id=lease_id, worker=worker, message_id=message_id)
        )
        return Claim(job.id, lease_id, job.attempts, job.run_attempts, dict(job.payload))


def _finish_failed(session: Session, job: Job, now: dt.datetime, code: str, message: str, trace: str | None) -> None:
    job.status, job.finished_at, job.lease_id = JobStatus.FAILED, now, None
    job.error_code, job.error_message, job.error_traceback = code, message, trace


def _close_attempt(session: Session, claim_: Claim, outcome: str, code: str | None, message: str | None) -> None:
    session.execute(
        update(JobAttempt)
        .where(JobAttempt.lease_id == claim_.lease_id)
        .values(outcome=outcome, finished_at=func.now(), error_code=code, error_message=message)
    )


def record_success(claim_: Claim, result: dict[str, Any]) -> bool:
    """Store the result if this lease is still current; False means a successor owns the job."""
    with transaction() as session:
        done = session.execute(
            update(Job)
            .where(Job.id == claim_.job_id, Job.lease_id == claim_.lease_id)
            .values(
                status=JobStatus.SUCCEEDED,
                result=result,
                progress_percent=100,
                finished_at=func.now(),
                lease_id=None,
                error_code=None,
                error_message=None,
                error_traceback=None,
            )
            .returning(Job.id)
        ).scalar_one_or_none()
        if done:
            _close_attempt(session, claim_, "succeeded", None, None)
        return done is not None


def record_failure(claim_: Claim, exc: BaseException, max_attempts: int) -> str | None:
    """Fail, retry later, or mark cancelled; returns the job's new status (None if the lease was lost)."""
    settings = get_settings()
    with transaction() as session:
        job = session.get(Job, claim_.job_id, with_for_update=True)
        if job is None or job.lease_id != claim_.lease_id:
            return None
        now = _now(session)
        if isinstance(exc, JobCancelled):
            job.status, job.finished_at, job.lease_id = JobStatus.CANCELLED, now, None
            _close_attempt(session, claim_, "cancelled", None, None)
            session.add(JobEvent(job_id=job.id, kind="cancelled", attempt=job.attempts))
            return job.status
        code, message = _describe(exc)
        trace = "".join(traceback.format_exception(exc))
        if is_transient(exc) and job.run_attempts < max_attempts:
            delay = backoff_seconds(
                job.run_attempts, base=settings.retry_backoff_base_s, cap=settings.retry_backoff_max_s
            )
            due = now + dt.timedelta(seconds=delay)
            job.status, job.lease_id, job.next_attempt_at = JobStatus.RETRYING, None, due
            job.error_code, job.error_message, job.error_traceback = code, message, trace
            session.add(OutboxMessage(job_id=job.id, available_at=due))
            _close_attempt(session, claim_, "retrying", code, message)
            return job.status
        if is_transient(exc):
            message = f"gave up after {job.run_attempts} attempts: {message}"
        _finish_failed(session, job, now, code, message, trace)
        _close_attempt(session, claim_, "failed", code, message)
        return job.status


def record_wait(claim_: Claim, wait: WaitForChildren) -> str | None:
    """Free the worker: the job waits for its children, or runs again at once if one already finished.

    Both this and the trigger that wakes a waiting parent lock the parent's row, so a child that
    finishes while its parent's handler runs is seen here or by the trigger, never by neither.
    """
    with transaction() as session:
        job = session.get(Job, claim_.job_id, with_for_update=True)
        if job is None or job.lease_id != claim_.lease_id:
            return None
        finished = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.id.in_(wait.child_ids), Job.parent_id == job.id, Job.status.in_(JobStatus.finished()))
        )
        if finished:
            job.status = JobStatus.QUEUED
            session.add(OutboxMessage(job_id=job.id))
        else:
            job.status = JobStatus.WAITING
        # A wait ends a step well: the next step gets the full retry budget.
        job.lease_id, job.run_attempts, job.result = None, 0, wait.result
        _close_attempt(session, claim_, "waiting", None, None)
        return job.status


def _describe(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, JobError):
        return exc.code, exc.message
    if isinstance(exc, ValidationError):
        return "invalid_payload", str(exc)
    if isinstance(exc, SoftTimeLimitExceeded):
        return "timeout", "the job exceeded its time limit"
    if is_transient(exc):
        return "transient_error", f"{type(exc).__name__}: {exc}"
    return "internal_error", f"{type(exc).__name__}: {exc}"


class Heartbeat(threading.Thread):
    """Beats for a running job so the reaper can tell a live worker from a lost one."""

    def __init__(self, context: JobContext, interval_s: float) -> None:
        super().__init__(name=f"heartbeat-{context.job_id}", daemon=True)
        self.context, self.interval_s, self._stop_event = context, interval_s, threading.Event()
        self._log_context = contextvars.copy_context()  # the task's request id on this thread's lines too

    def run(self) -> None:
        self._log_context.run(self._beat)

    def _beat(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            try:
                with transaction() as session:
                    cancel = session.execute(
                        update(Job)
                        .where(Job.id == self.context.job_id, Job.lease_id == self.context.lease_id)
                        .values(heartbeat_at=func.now())
                        .returning(Job.cancel_requested)
                    ).scalar_one_or_none()
                if cancel:
                    self.context._cancel_requested.set()
            except Exception:  # a missed beat must not end the beating: the reaper would take the job
                log.warning("heartbeat.failed", exc_info=True)

    def stop(self) -> None:
        self._stop_event.set()


def execute(job_type: JobType, job_id: uuid.UUID, *, message_id: str, worker: str) -> str | None:
    """Run one delivery of a job end to end; returns the job's status afterwards (None: dropped)."""
    claim_ = claim(job_id, message_id=message_id, worker=worker)
    if claim_ is None:
        return None
    context = JobContext(claim_.job_id, claim_.lease_id, claim_.attempt, claim_.run_attempt)
    heartbeat = Heartbeat(context, get_settings().heartbeat_interval_s)
    heartbeat.start()
    try:
        payload = job_type.payload_model.model_validate(claim_.payload)
        result = job_type.handler(payload, context)
    except WaitForChildren as wait:
        return record_wait(claim_, wait)
    except Exception as exc:  # noqa: BLE001 - every outcome is recorded in the ledger
        return record_failure(claim_, exc, job_type.max_attempts)
    finally:
        heartbeat.stop()
    return JobStatus.SUCCEEDED if record_success(claim_, result) else None
