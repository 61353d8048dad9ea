"""Accepting, finding, cancelling and re-running jobs: the service behind the API and the CLI.

A job is accepted by committing its row and an outbox row in one transaction; the relay
publishes after commit, so a job the API acknowledged is never only in the broker.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from models.platform import ApiClient, IdempotencyKey, Job, JobAttempt, JobEvent, JobStatus, OutboxMessage
from roadie.db import advisory_lock_key
from roadie.jobs.types import JobType
from roadie.logs import current_request_id
from roadie.settings import get_settings


class IntakeError(Exception):
    """A request the service refuses; ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, code: str, message: str, fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields or []


def field_error(name: str, reason: str) -> dict[str, str]:
    """One entry of an IntakeError's ``fields``: which field was refused, and why."""
    return {"field": name, "reason": reason}


@dataclass
class NewJob:
    """A job the API's group commit just inserted, as :func:`roadie.jobs.views.job_view` reads it.

    The 202 of ``POST /v1/jobs`` is built from this: an ORM object per request cost the API more
    CPU than the rest of the request. Past ``created_at``, its fields hold what a job nothing has
    touched yet holds.
    """

    id: uuid.UUID
    type: str
    queue: str
    payload: dict[str, Any]
    status: str
    attempts: int
    run_attempts: int
    max_attempts: int
    progress_percent: int
    cancel_requested: bool
    publish_count: int
    client_id: uuid.UUID | None
    idempotency_key: str | None
    request_id: str | None
    created_at: dt.datetime
    parent_id: uuid.UUID | None = None
    progress_stage: str | None = None
    result: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    next_attempt_at: dt.datetime | None = None
    children: list[Job] = field(default_factory=list)
    events: list[JobEvent] = field(default_factory=list)
    attempt_rows: list[JobAttempt] = field(default_factory=list)


@dataclass(frozen=True)
class Submission:
    job: Job | NewJob
    replayed: bool


def fingerprint(job_type: str, payload: dict[str, Any]) -> str:
    """The request's identity for Idempotency-Key comparison: SHA-256 of canonical JSON."""
    canonical = json.dumps({"type": job_type, "payload": payload}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def lock_key(client_id: uuid.UUID, key: str) -> int:
    """The transaction-level advisory lock that makes one request at a time own a client's key."""
    return advisory_lock_key(client_id, key)


def idempotency_outcome(previous: IdempotencyKey, fingerprint_: str, now: dt.datetime) -> bool:
    """Whether a stored key replays its job (True) or has expired and is replaced (False).

    A live key stored with another request body is refused with 422.
    """
    if previous.expires_at <= now:
        return False
    if previous.fingerprint != fingerprint_:
        raise IntakeError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
            [field_error("Idempotency-Key", "already used with a different body")],
        )
    return True


def in_flight_error() -> IntakeError:
    """409: another request with this Idempotency-Key is still in its transaction."""
    return IntakeError(409, "idempotency_in_flight", "a request with this Idempotency-Key is in progress")


def new_job_columns(job_type: JobType, payload: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The column values of a queued job; it carries the bound request id (the API request's, or
    the spawning task's)."""
    fields.setdefault("request_id", current_request_id())
    return {
        "type": job_type.name,
        "queue": job_type.queue,
        "payload": payload,
        "status": JobStatus.QUEUED,
        "attempts": 0,
        "run_attempts": 0,
        "max_attempts": job_type.max_attempts,
        "progress_percent": 0,
        "cancel_requested": False,
        "publish_count": 0,
        **fields,
    }


def new_job(job_type: JobType, payload: dict[str, Any], **fields: Any) -> Job:
    """A queued job (see :func:`new_job_columns`)."""
    return Job(**new_job_columns(job_type, payload, **fields))


def enqueue(
    session: Session, job_type: JobType, payload: dict[str, Any], *, actor: str, detail: Any = None, **fields: Any
) -> Job:
    """A job the platform starts itself (a pipeline stage, a payout batch), in the caller's transaction:
    the job, its outbox row (published once the transaction commits) and its ``created`` event."""
    job = new_job(job_type, payload, **fields)
    session.add(job)
    session.flush()
    session.add_all([OutboxMessage(job_id=job.id), JobEvent(job_id=job.id, kind="created", actor=actor, detail=detail)])
    return job


async def replayed_job(
    session: AsyncSession, client: ApiClient, idempotency_key: str, print_: str, now: dt.datetime
) -> Job | None:
    """The job of an earlier request with this key and fingerprint, or None for a new request.

    Takes the key's transaction lock first: a request with the same key still in its transaction
    is 409, and the same key with another fingerprint 422. An expired key is forgotten.
    """
    locked = await session.scalar(select(func.pg_try_advisory_xact_lock(lock_key(client.id, idempotency_key))))
    if not locked:
        raise in_flight_error()
    previous = await session.scalar(
        select(IdempotencyKey).where(IdempotencyKey.client_id == client.id, IdempotencyKey.key == idempotency_key)
    )
    if previous is not None and idempotency_outcome(previous, print_, now):
        return await load_job(session, previous.job_id)
    if previous is not None:
        await session.delete(previous)
        await session.flush()
    return None


async def submit(
    session: AsyncSession,
    job_type: JobType,
    payload: dict[str, Any],
    *,
    client: ApiClient | None,
    idempotency_key: str | None = None,
    now: dt.datetime | None = None,
) -> Submission:
    """Create the job and its outbox row, honouring the client's Idempotency-Key.

    Same key and same body: the original job. Same key, other body: 422. A request with the
    same key while the first is still in its transaction: 409.
    """
    now = now or dt.datetime.now(dt.UTC)
    print_ = fingerprint(job_type.name, payload)
    if idempotency_key is not None and client is not None:
        previous_job = await replayed_job(session, client, idempotency_key, print_, now)
        if previous_job is not None:
            return Submission(previous_job, replayed=True)
    job = await create_job(
        session, job_type, payload, client=client, idempotency_key=idempotency_key, request_fingerprint=print_, now=now
    )
    return Submission(job, replayed=False)


async def create_job(
    session: AsyncSession,
    job_type: JobType,
    payload: dict[str, Any],
    *,
    client: ApiClient | None,
    idempotency_key: str | None,
    request_fingerprint: str,
    now: dt.datetime,
) -> Job:
    """The job, its outbox row, its ``created`` event and its Idempotency-Key, once :func:`replayed_job`
    has found no earlier request with that key."""
    job = new_job(job_type, payload, client_id=client.id if client else None, idempotency_key=idempotency_key)
    session.add(job)
    await session.flush()
    session.add(OutboxMessage(job_id=job.id))
    if idempotency_key is not None and client is not None:
        ttl = dt.timedelta(hours=get_settings().idempotency_ttl_hours)
        session.add(
            IdempotencyKey(
                client_id=client.id,
                key=idempotency_key,
                fingerprint=request_fingerprint,
                job_id=job.id,
                expires_at=now + ttl,
            )
        )
    created = JobEvent(job_id=job.id, kind="created", actor=client.name if client else None)
    session.add(created)
    await session.flush()
    # A new job has no children or attempts yet: say so rather than read them back.
    for name, value in (("children", []), ("attempt_rows", []), ("events", [created])):
        set_committed_value(job, name, value)
    return job


def _with_details(query: Select[Job]) -> Select[Job]:
    return query.options(
        selectinload(Job.children), selectinload(Job.events), selectinload(Job.attempt_rows)
    ).execution_options(populate_existing=True)


async def load_job(session: AsyncSession, job_id: uuid.UUID) -> Job:
    job = await session.scalar(_with_details(select(Job).where(Job.id == job_id)))
    if job is None:
        raise IntakeError(404, "not_found", f"no job {job_id}")
    return job


async def find_job(session: AsyncSession, job_id: uuid.UUID, client: ApiClient, *, lock: bool = False) -> Job:
    """A job the client may see: its own, or any for an admin."""
    query = select(Job).where(Job.id == job_id)
    if "admin" not in client.scopes:
        query = query.where(Job.client_id == client.id)
    if lock:
        query = query.with_for_update()
    job = await session.scalar(_with_details(query))
    if job is None:
        raise IntakeError(404, "not_found", f"no job {job_id}")
    return job


@dataclass(frozen=True)
class JobFilter:
    statuses: Sequence[str] = ()
    types: Sequence[str] = ()
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None
    error_code: str | None = None

    def apply(self, query: Select[Job]) -> Select[Job]:
        if self.statuses:
            query = query.where(Job.status.in_(self.statuses))
        if self.types:
            query = query.where(Job.type.in_(self.types))
        if self.created_after:
            query = query.where(Job.created_at >= self.created_after)
        if self.created_before:
            query = query.where(Job.created_at < self.created_before)
        if self.error_code:
            query = query.where(Job.error_code == self.error_code)
        return query


def encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), str(job.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return dt.datetime.fromisoformat(created), uuid.UUID(job_id)
    except (ValueError, TypeError) as exc:
        raise IntakeError(
            422, "validation_error", "invalid cursor", [{"field": "cursor", "reason": "not a cursor this API issued"}]
        ) from exc


async def list_jobs(
    session: AsyncSession, client: ApiClient | None, job_filter: JobFilter, *, limit: int, cursor: str | None
) -> tuple[list[Job], str | None]:
    """A page of jobs, newest first, and the cursor of the next page (None on the last)."""
    query = job_filter.apply(select(Job))
    if client is not None and "admin" not in client.scopes:
        query = query.where(Job.client_id == client.id)
    if cursor:
        created, job_id = decode_cursor(cursor)
        query = query.where(tuple_(Job.created_at, Job.id) < tuple_(created, job_id))
    rows = list((await session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1))).all())
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def cancel(session: AsyncSession, job: Job, actor: str) -> Job:
    """Cancel a waiting job at once; ask a running one to stop at its next progress report or beat."""
    if job.status in JobStatus.finished():
        raise IntakeError(409, "job_finished", f"job is already {job.status}")
    if job.status == JobStatus.RUNNING:
        job.cancel_requested = True
        session.add(JobEvent(job_id=job.id, kind="cancel_requested", actor=actor, attempt=job.attempts))
    else:
        job.status, job.cancel_requested, job.finished_at = JobStatus.CANCELLED, True, func.now()
        session.add(JobEvent(job_id=job.id, kind="cancelled", actor=actor, attempt=job.attempts))
    await session.flush()
    return await load_job(session, job.id)


async def rerun(session: AsyncSession, job: Job, actor: str, *, force: bool = False) -> Job:
    """Re-enqueue a finished job from its stored spec; a succeeded job only when forced."""
    if job.status not in JobStatus.finished():
        raise IntakeError(409, "job_active", f"job is {job.status}; only finished jobs can be re-run")
    if job.status == JobStatus.SUCCEEDED and not force:
        raise IntakeError(409, "job_succeeded", "job already succeeded; re-run it with force=true")
    session.add(
        JobEvent(
            job_id=job.id,
            kind="rerun",
            actor=actor,
            attempt=job.attempts + 1,
            detail={"previous_status": job.status, "forced": force, "previous_error_code": job.error_code},
        )
    )
    job.status, job.run_attempts, job.cancel_requested = JobStatus.QUEUED, 0, False
    job.finished_at = job.next_attempt_at = job.lease_id = None
    job.progress_percent, job.progress_stage = 0, None
    session.add(OutboxMessage(job_id=job.id))
    await session.flush()
    return await load_job(session, job.id)


async def rerun_matching(
    session: AsyncSession, job_filter: JobFilter, actor: str, *, force: bool, limit: int
) -> list[uuid.UUID]:
    """Bulk re-run: every finished job matching the filter, locked so two admins cannot double it."""
    jobs = (
        await session.scalars(
            job_filter.apply(select(Job))
            .where(Job.status.in_(JobStatus.finished()))
            .order_by(Job.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    rerun_ids = []
    for job in jobs:
        if job.status == JobStatus.SUCCEEDED and not force:
            continue
        await rerun(session, job, actor, force=force)
        rerun_ids.append(job.id)
    return rerun_ids
