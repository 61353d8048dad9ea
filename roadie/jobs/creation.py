"""Creating jobs: the one place that knows a new job's columns and the Idempotency-Key rules.

Every job is committed with its outbox row and its ``created`` event in one transaction; the relay
publishes after commit, so a job that was acknowledged is never only in the broker. Two kinds of
caller, one set of rules:

- Jobs an API client asks for (``POST /v1/jobs``, a track upload): :func:`resolve_keys` settles
  the requests whose Idempotency-Key decides their outcome, then :func:`insert_jobs` inserts the
  others in one statement. The API's group commit (``roadie.jobs.group_commit``) runs both for a
  batch of concurrent requests; the track upload runs them for its one request inside its own
  transaction, so its job commits with its track.
- Jobs the platform starts itself (a pipeline stage, a beat run, a payout batch): :func:`enqueue`,
  inside the caller's transaction. They have no client and no Idempotency-Key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import String, and_, bindparam, column, delete, func, insert, literal, select, tuple_
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from models.platform import (
    PRIORITY_DEFAULT,
    ApiClient,
    IdempotencyKey,
    Job,
    JobAttempt,
    JobEvent,
    JobStatus,
    OutboxMessage,
)
from roadie.db import PreparedStatement, advisory_lock_key
from roadie.jobs.intake import IntakeError, field_error, load_job
from roadie.jobs.options import RunOptions
from roadie.jobs.types import JobType
from roadie.logs import current_request_id
from roadie.settings import get_settings


@dataclass
class NewJob:
    """A job :func:`insert_jobs` just inserted, as :func:`roadie.jobs.views.job_view` reads it.

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
    callback_url: str | None = None
    batch_id: uuid.UUID | None = None
    run_at: dt.datetime | None = None
    priority: int = PRIORITY_DEFAULT
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


#: What a client's request comes to: its job (new or replayed), or the refusal the API answers with.
Outcome = Submission | IntakeError


def fingerprint(identity: dict[str, Any]) -> str:
    """A request's identity for Idempotency-Key comparison: SHA-256 of its canonical JSON."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class JobRequest:
    """A job an API client asks for."""

    job_type: JobType
    payload: dict[str, Any]
    client: ApiClient
    idempotency_key: str | None = None
    #: The request's fingerprint when it is more than the job's type and payload (an upload's files).
    request_fingerprint: str | None = None
    request_id: str | None = field(default_factory=current_request_id)
    job_id: uuid.UUID = field(default_factory=uuid.uuid4)
    #: Where the job's own events are also posted (checked by the caller: a safe URL, a signing endpoint).
    callback_url: str | None = None
    batch_id: uuid.UUID | None = None
    #: When the job runs (``run_at`` or ``delay_s``); by default at once.
    options: RunOptions = field(default_factory=RunOptions)

    @cached_property
    def fingerprint(self) -> str:
        """Only a request with an Idempotency-Key needs one (it is stored with the key)."""
        if self.request_fingerprint:
            return self.request_fingerprint
        identity: dict[str, Any] = {"type": self.job_type.name, "payload": self.payload}
        if self.callback_url is not None:
            identity["callback_url"] = self.callback_url
        return fingerprint(identity | self.options.identity())


def in_flight_error() -> IntakeError:
    """409: another request with this Idempotency-Key is still in its transaction."""
    return IntakeError(409, "idempotency_in_flight", "a request with this Idempotency-Key is in progress")


def replays(previous: IdempotencyKey, fingerprint_: str, now: dt.datetime) -> bool:
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


async def resolve_keys(session: AsyncSession, requests: Sequence[JobRequest], now: dt.datetime) -> list[Outcome | None]:
    """Each request's outcome when its Idempotency-Key decides it, else None (create its job).

    In the session's transaction: a key another transaction holds (its advisory lock), or that an
    earlier request of ``requests`` uses, is 409; a stored key with another body is 422; one with
    the same body replays its job; an expired one is deleted, to be replaced. The locks are held
    until the transaction ends, so the new jobs must be inserted in it.
    """
    outcomes: list[Outcome | None] = [None] * len(requests)
    keyed: dict[tuple[uuid.UUID, str], int] = {}
    for index, request in enumerate(requests):
        if request.idempotency_key is None:
            continue
        scoped = (request.client.id, request.idempotency_key)
        if scoped in keyed:
            outcomes[index] = in_flight_error()
        else:
            keyed[scoped] = index
    locks = [func.pg_try_advisory_xact_lock(advisory_lock_key(*scoped)) for scoped in keyed]
    locked = (await session.execute(select(*locks))).one() if locks else ()
    held = {scoped: index for (scoped, index), got in zip(keyed.items(), locked, strict=True) if got}
    for scoped, index in keyed.items():
        if scoped not in held:
            outcomes[index] = in_flight_error()
    if not held:
        return outcomes
    previous_rows = await session.scalars(
        select(IdempotencyKey).where(tuple_(IdempotencyKey.client_id, IdempotencyKey.key).in_(list(held)))
    )
    expired = []
    for previous in previous_rows:
        index = held[(previous.client_id, previous.key)]
        try:
            replay = replays(previous, requests[index].fingerprint, now)
        except IntakeError as exc:
            outcomes[index] = exc
            continue
        if replay:
            assert previous.job_id is not None  # a batch's key holds a batch's fingerprint, which no job has
            outcomes[index] = Submission(await load_job(session, previous.job_id), replayed=True)
        else:
            expired.append(previous.id)
    if expired:
        await session.execute(delete(IdempotencyKey).where(IdempotencyKey.id.in_(expired)))
    return outcomes


def new_job_columns(job_type: JobType, payload: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The column values of a new job: queued, or scheduled when it has a ``run_at``; it carries the
    bound request id (the API request's, or the spawning task's)."""
    fields.setdefault("request_id", current_request_id())
    return {
        "type": job_type.name,
        "queue": job_type.queue,
        "payload": payload,
        "status": JobStatus.SCHEDULED if fields.get("run_at") is not None else JobStatus.QUEUED,
        "attempts": 0,
        "run_attempts": 0,
        "max_attempts": job_type.max_attempts,
        "priority": job_type.priority,
        "progress_percent": 0,
        "cancel_requested": False,
        "publish_count": 0,
        **fields,
    }


def new_job(job_type: JobType, payload: dict[str, Any], **fields: Any) -> Job:
    """A queued job (see :func:`new_job_columns`), not yet added to a session."""
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


#: The columns a new job is inserted with; the rest are NULL or server defaults.
_JOB_COLUMNS = (
    "id", "type", "queue", "payload", "status", "attempts", "run_attempts", "max_attempts", "progress_percent",
    "cancel_requested", "publish_count", "client_id", "idempotency_key", "request_id", "callback_url", "batch_id",
    "run_at", "priority",
)  # fmt: skip


@lru_cache(maxsize=1)
def _insert_statement() -> PreparedStatement:
    """One statement for any number of requests (compiled and prepared once).

    The requests are one JSON array of rows, one object per job with its columns and its request's
    fingerprint (``jsonb_to_recordset`` turns it into rows of the columns' types): one parameter
    to encode, where an array per column cost psycopg more than the rest of the request. The
    expiry of new Idempotency-Keys is the other parameter. Only jobs of live clients are inserted;
    the statement returns each new job's id and creation time.
    """
    table = Job.__table__
    requested = func.jsonb_to_recordset(bindparam("rows", type_=JSONB)).table_valued(
        *(column(name, table.c[name].type) for name in _JOB_COLUMNS), column("fingerprint", String)
    )
    source = select(requested.render_derived(with_types=True)).cte("source")
    live = and_(ApiClient.id == source.c.client_id, ApiClient.revoked_at.is_(None))
    new_jobs = (
        insert(Job)
        .from_select(_JOB_COLUMNS, select(*(source.c[name] for name in _JOB_COLUMNS)).join(ApiClient, live))
        .returning(Job.id, Job.created_at, Job.run_at)
        .cte("new_jobs")
    )
    # A delayed job's row waits in the outbox until its time; the others are due now.
    due = func.coalesce(new_jobs.c.run_at, func.now())
    new_outbox = (
        insert(OutboxMessage).from_select(["job_id", "available_at"], select(new_jobs.c.id, due)).cte("new_outbox")
    )
    new_events = (
        insert(JobEvent)
        .from_select(
            ["job_id", "kind", "actor"],
            select(new_jobs.c.id, literal("created"), ApiClient.name)
            .select_from(new_jobs)
            .join(source, source.c.id == new_jobs.c.id)
            .join(ApiClient, ApiClient.id == source.c.client_id),
        )
        .cte("new_events")
    )
    new_keys = (
        insert(IdempotencyKey)
        .from_select(
            ["client_id", "key", "fingerprint", "job_id", "expires_at"],
            select(
                source.c.client_id,
                source.c.idempotency_key,
                source.c.fingerprint,
                source.c.id,
                bindparam("expires_at", type_=IdempotencyKey.expires_at.type),
            )
            .join(new_jobs, new_jobs.c.id == source.c.id)
            .where(source.c.idempotency_key.is_not(None)),
        )
        .cte("new_keys")
    )
    return PreparedStatement(select(new_jobs.c.id, new_jobs.c.created_at).add_cte(new_outbox, new_events, new_keys))


async def insert_jobs(connection: AsyncConnection, requests: Sequence[JobRequest], now: dt.datetime) -> list[Outcome]:
    """Each request's job, its outbox row, its ``created`` event and its Idempotency-Key: one round trip.

    For requests :func:`resolve_keys` left to create (in the same transaction, when they have keys).
    A client revoked since its key was looked up (``roadie.auth`` caches lookups briefly) gets no
    job: its request is refused with 401.
    """
    columns = [
        new_job_columns(
            r.job_type,
            r.payload,
            id=r.job_id,
            client_id=r.client.id,
            idempotency_key=r.idempotency_key,
            request_id=r.request_id,
            callback_url=r.callback_url,
            batch_id=r.batch_id,
            run_at=r.options.due_at(now),
            priority=r.options.priority if r.options.priority is not None else r.job_type.priority,
        )
        for r in requests
    ]
    rows = [
        {**job, "fingerprint": r.fingerprint if r.idempotency_key is not None else None}
        for job, r in zip(columns, requests, strict=True)
    ]
    expires_at = now + dt.timedelta(hours=get_settings().idempotency_ttl_hours)
    created_at = dict(
        await _insert_statement().fetchall_on_async(connection, rows=Jsonb(rows, dumps=_dumps), expires_at=expires_at)
    )
    return [
        Submission(NewJob(**job, created_at=created_at[job["id"]]), replayed=False)
        if job["id"] in created_at
        else IntakeError(401, "unauthenticated", "unknown or revoked API key")
        for job in columns
    ]


def _dumps(value: Any) -> str:
    """JSON for the rows parameter: ids as their text."""
    return json.dumps(value, default=str)
