"""What a worker does with one delivered job: claim it, run it with a heartbeat, record the outcome.

Every step is its own short transaction on the job row. A claim hands out a lease; only
the holder of the current lease may record progress or an outcome, so a worker that was
presumed dead and comes back cannot overwrite the work of its successor.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import os
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from psycopg.types.json import Jsonb
from pydantic import ValidationError
from sqlalchemy import and_, bindparam, exists, func, insert, literal, or_, select, tuple_, update
from sqlalchemy.orm import Session

from models.controls import Pause, holding, paused
from models.platform import Job, JobAttempt, JobEvent, JobStatus, OutboxMessage
from roadie.db import PreparedStatement, autocommit, transaction
from roadie.jobs.errors import JobCancelled, JobError, WaitForChildren
from roadie.jobs.types import JobType
from roadie.retrying import backoff_seconds, is_transient
from roadie.settings import get_settings

log = logging.getLogger(__name__)


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


class Dropped(enum.StrEnum):
    """Why a delivery ended without running the job or without recording what its run did."""

    #: Another delivery ran, runs or will run the job: it is finished, held by a live lease, waiting
    #: for its children or not yet due. Expected with at-least-once delivery; nothing to do.
    DUPLICATE = "duplicate"
    #: The handler ran, but its lease had moved on (the worker was presumed dead and the job was
    #: taken over): its outcome is refused, the successor's stands. A sign of a stalled or cut-off worker.
    LEASE_LOST = "lease_lost"
    #: The job was closed instead of run: unknown, asked to cancel, or lost by too many workers.
    NOT_RUN = "not_run"
    #: Its queue or job type is paused: the job went back to the outbox, held until resumed.
    PAUSED = "paused"


def _now(session: Session) -> dt.datetime:
    return session.execute(select(func.now())).scalar_one()


@lru_cache(maxsize=1)
def _claim_waiting_statement() -> PreparedStatement:
    """Claim a waiting job (queued, or retrying and due) and open its attempt, in one statement.

    Built once: its parameters are ``job``, ``lease``, ``worker`` and ``message``.
    """
    now = func.now()
    lease_id = bindparam("lease", type_=JobAttempt.lease_id.type)
    claimed = (
        update(Job)
        .where(
            Job.id == bindparam("job", type_=Job.id.type),
            Job.cancel_requested.is_(False),
            ~paused(Job.queue, Job.type),
            or_(
                Job.status == JobStatus.QUEUED,
                and_(
                    Job.status == JobStatus.RETRYING,
                    or_(Job.next_attempt_at.is_(None), Job.next_attempt_at <= now),
                ),
            ),
        )
        .values(
            attempts=Job.attempts + 1,
            run_attempts=Job.run_attempts + 1,
            status=JobStatus.RUNNING,
            lease_id=lease_id,
            started_at=func.coalesce(Job.started_at, now),
            heartbeat_at=now,
            next_attempt_at=None,
        )
        .returning(Job.id, Job.attempts, Job.run_attempts, Job.payload)
        .cte("claimed")
    )
    opened = (
        insert(JobAttempt)
        .from_select(
            ["job_id", "number", "lease_id", "worker", "message_id", "outcome"],
            select(
                claimed.c.id,
                claimed.c.attempts,
                lease_id,
                bindparam("worker", type_=JobAttempt.worker.type),
                bindparam("message", type_=JobAttempt.message_id.type),
                literal("running"),  # column defaults are not applied inside a CTE
            ),
        )
        .cte("opened")
    )
    return PreparedStatement(
        select(claimed.c.id, claimed.c.attempts, claimed.c.run_attempts, claimed.c.payload).add_cte(opened)
    )


def claim(job_id: uuid.UUID, *, message_id: str, worker: str) -> Claim | Dropped:
    """Take the job for this delivery, or say why the delivery is dropped.

    The usual case, a waiting job, is one statement committed on its own. Everything else (a
    redelivery, a live or expired lease, a cancel request, a finished or unknown job) is decided
    in a transaction that locks the row.
    """
    lease_id = uuid.uuid4()
    row = _claim_waiting_statement().fetchone(job=job_id, lease=lease_id, worker=worker, message=message_id)
    if row is not None:
        claimed_id, attempt, run_attempt, payload = row
        return Claim(claimed_id, lease_id, attempt, run_attempt, dict(payload))
    return _claim_other(job_id, message_id=message_id, worker=worker)


def _claim_other(job_id: uuid.UUID, *, message_id: str, worker: str) -> Claim | Dropped:
    settings = get_settings()
    with transaction() as session:
        row = session.execute(select(Job, func.now()).where(Job.id == job_id).with_for_update(of=Job)).one_or_none()
        if row is None:
            log.warning("job.unknown", extra={"job_id": str(job_id)})
            return Dropped.NOT_RUN
        job, now = row
        if job.status in JobStatus.finished():
            return Dropped.DUPLICATE
        if job.status == JobStatus.WAITING:
            return Dropped.DUPLICATE  # late: the last child to finish re-queues the job with a message of its own
        if job.status == JobStatus.RETRYING and job.next_attempt_at and job.next_attempt_at > now:
            return Dropped.DUPLICATE  # early; the outbox sends the due one
        if job.status == JobStatus.RUNNING:
            current = session.scalars(select(JobAttempt).where(JobAttempt.lease_id == job.lease_id)).one_or_none()
            redelivered = current is not None and current.message_id == message_id
            expired = (
                job.heartbeat_at is None or (now - job.heartbeat_at).total_seconds() > settings.heartbeat_timeout_s
            )
            if not (redelivered or expired):
                return Dropped.DUPLICATE  # another worker holds a live lease
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
                return Dropped.NOT_RUN
        if job.cancel_requested:
            job.status, job.finished_at, job.lease_id = JobStatus.CANCELLED, now, None
            session.add(JobEvent(job_id=job.id, kind="cancelled", attempt=job.attempts))
            return Dropped.NOT_RUN
        if _hand_back_if_paused(session, job):
            return Dropped.PAUSED
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


def _hand_back_if_paused(session: Session, job: Job) -> bool:
    """A job published before its pause goes back to the outbox, held, instead of running.

    The pause row is read FOR SHARE: a resume deletes it only after this transaction, and then sees the held row.
    """
    pause = select(Pause.name).where(holding(job.queue, job.type)).limit(1).with_for_update(read=True)
    if session.scalar(pause) is None:
        return False
    if job.status == JobStatus.RUNNING:  # a lost worker's job, redelivered
        job.status, job.lease_id = JobStatus.QUEUED, None
    if not session.scalar(select(exists().where(OutboxMessage.job_id == job.id))):
        session.add(OutboxMessage(job_id=job.id, held=True))
    return True


def _finish_failed(session: Session, job: Job, now: dt.datetime, code: str, message: str, trace: str | None) -> None:
    job.status, job.finished_at, job.lease_id = JobStatus.FAILED, now, None
    job.error_code, job.error_message, job.error_traceback = code, message, trace


def _close_attempt(session: Session, claim_: Claim, outcome: str, code: str | None, message: str | None) -> None:
    session.execute(
        update(JobAttempt)
        .where(JobAttempt.lease_id == claim_.lease_id)
        .values(outcome=outcome, finished_at=func.now(), error_code=code, error_message=message)
    )


@lru_cache(maxsize=1)
def _record_success_statement() -> PreparedStatement:
    """Close a job with its result and its attempt, if ``lease`` is still current (built once)."""
    lease_id = bindparam("lease", type_=Job.lease_id.type)
    done = (
        update(Job)
        .where(Job.id == bindparam("job", type_=Job.id.type), Job.lease_id == lease_id)
        .values(
            status=JobStatus.SUCCEEDED,
            result=bindparam("result", type_=Job.result.type),
            progress_percent=100,
            finished_at=func.now(),
            lease_id=None,
            error_code=None,
            error_message=None,
            error_traceback=None,
        )
        .returning(Job.id)
        .cte("done")
    )
    closed = (
        update(JobAttempt)
        .where(JobAttempt.lease_id == lease_id, exists(select(done.c.id)))
        .values(outcome="succeeded", finished_at=func.now(), error_code=None, error_message=None)
        .cte("closed")
    )
    return PreparedStatement(select(done.c.id).add_cte(closed))


def record_success(claim_: Claim, result: dict[str, Any]) -> bool:
    """Store the result if this lease is still current; False means a successor owns the job.

    One statement, committed on its own: the job and its attempt are closed together or not at all.
    """
    recorded = _record_success_statement().fetchone(job=claim_.job_id, lease=claim_.lease_id, result=Jsonb(result))
    return recorded is not None


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
        code, message = _describe(exc, job.id)
        if not _expected(exc):
            log.warning("job.unexpected_error", extra={"job_id": str(job.id), "error_code": code}, exc_info=exc)
        trace = "".join(traceback.format_exception(exc))
        if is_transient(exc) and job.run_attempts < max_attempts:
            delay = getattr(exc, "retry_after_s", None) or backoff_seconds(
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


def _expected(exc: BaseException) -> bool:
    """Raised on purpose, or about the job's own payload: its message is written for the client."""
    return isinstance(exc, JobError | ValidationError | SoftTimeLimitExceeded)


def _describe(exc: BaseException, job_id: uuid.UUID) -> tuple[str, str]:
    """The error's code and the message every client reads.

    An unexpected error (a database error, a bug) gets a generic message: its text may hold SQL,
    values or paths, so the detail stays in the traceback, which only admins see, and in the log.
    """
    if isinstance(exc, JobError):
        return exc.code, exc.message
    if isinstance(exc, ValidationError):
        return "invalid_payload", str(exc)
    if isinstance(exc, SoftTimeLimitExceeded):
        return "timeout", "the job exceeded its time limit"
    code = "transient_error" if is_transient(exc) else "internal_error"
    return code, f"the job hit an unexpected error; an operator can look it up by the job id {job_id}"


class Heartbeats:
    """One thread per process beats for every job the process runs, so the reaper can tell a live
    worker from a lost one; a job's first beat comes at most one interval after its claim.

    One UPDATE per interval covers all of the process's jobs (a prefork child runs one at a time,
    a thread pool several), and tells each job whether it was asked to cancel.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[uuid.UUID, JobContext] = {}
        self._thread: threading.Thread | None = None

    def add(self, context: JobContext) -> None:
        with self._lock:
            self._running[context.lease_id] = context
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._beat_forever, name="heartbeats", daemon=True)
                self._thread.start()

    def remove(self, context: JobContext) -> None:
        with self._lock:
            self._running.pop(context.lease_id, None)

    def _beat_forever(self) -> None:
        interval_s = get_settings().heartbeat_interval_s
        while True:
            time.sleep(interval_s)
            with self._lock:
                running = list(self._running.values())
            if not running:
                continue
            try:
                self.beat(running)
            except Exception:  # a missed beat must not end the beating: the reaper would take the jobs
                log.warning("heartbeat.failed", extra={"job_ids": [str(c.job_id) for c in running]}, exc_info=True)

    @staticmethod
    def beat(running: list[JobContext]) -> None:
        """Stamp the jobs whose lease is still current; flag those asked to cancel."""
        by_lease = {context.lease_id: context for context in running}
        with autocommit() as connection:
            rows = connection.execute(
                update(Job)
                .where(tuple_(Job.id, Job.lease_id).in_([(c.job_id, c.lease_id) for c in running]))
                .values(heartbeat_at=func.now())
                .returning(Job.lease_id, Job.cancel_requested)
            ).all()
        for lease_id, cancel in rows:
            if cancel and lease_id is not None:
                by_lease[lease_id]._cancel_requested.set()


_heartbeats = Heartbeats()


def _fresh_heartbeats_after_fork() -> None:
    """A forked child has none of its parent's threads: it starts its own when it runs a job."""
    global _heartbeats  # noqa: PLW0603 - one per process
    _heartbeats = Heartbeats()


os.register_at_fork(after_in_child=_fresh_heartbeats_after_fork)


def execute(job_type: JobType, job_id: uuid.UUID, *, message_id: str, worker: str) -> str | Dropped:
    """Run one delivery of a job end to end; returns the job's status afterwards, or why it was dropped."""
    claim_ = claim(job_id, message_id=message_id, worker=worker)
    if isinstance(claim_, Dropped):
        return claim_
    context = JobContext(claim_.job_id, claim_.lease_id, claim_.attempt, claim_.run_attempt)
    heartbeats = _heartbeats
    heartbeats.add(context)
    try:
        payload = job_type.payload_model.model_validate(claim_.payload)
        result = job_type.handler(payload, context)
    except WaitForChildren as wait:
        status = record_wait(claim_, wait)
    except Exception as exc:  # noqa: BLE001 - every outcome is recorded in the ledger
        status = record_failure(claim_, exc, job_type.max_attempts)
    else:
        status = JobStatus.SUCCEEDED if record_success(claim_, result) else None
    finally:
        heartbeats.remove(context)
    return Dropped.LEASE_LOST if status is None else status
