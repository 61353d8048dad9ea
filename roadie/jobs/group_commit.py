"""Group commit for the intake API: the jobs of concurrent requests share one transaction.

Each ``POST /v1/jobs`` waits for a transaction that commits its job, its outbox row, its
``created`` event and (with an Idempotency-Key) its key row together, before it answers 202; the
requests that arrive while one batch is committing form the next batch. A batch therefore costs
one round trip for every job in it (plus one or two for Idempotency-Keys) and one WAL flush,
instead of one transaction per request, and the relay hears one NOTIFY per batch.

Every request still gets its own outcome:

- Idempotency-Keys keep their rules: a key another transaction holds, or that an earlier request
  of the same batch uses, is 409; a stored key with another body is 422; one with the same body
  replays its job; an expired one is replaced.
- A key revoked after it was looked up (``roadie.auth`` caches lookups briefly) creates no job:
  the insert joins the live client row, so the request is refused with 401.
- If a batch's statements fail, it is rolled back and every request is retried in a transaction
  of its own, so one bad request cannot take its neighbours down. A failed COMMIT is reported to
  every request of the batch (its outcome is unknown, as with any failed commit).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import String, and_, bindparam, column, delete, func, insert, literal, select, tuple_
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from models.platform import ApiClient, IdempotencyKey, Job, JobEvent, OutboxMessage
from roadie.db import PreparedStatement, async_engine, async_transaction
from roadie.jobs.intake import (
    IntakeError,
    NewJob,
    Submission,
    fingerprint,
    idempotency_outcome,
    in_flight_error,
    load_job,
    lock_key,
    new_job_columns,
)
from roadie.jobs.types import JobType
from roadie.logs import current_request_id
from roadie.settings import get_settings

#: Most requests one transaction takes; a busier moment makes several batches in a row.
MAX_BATCH = 128
#: Batches committing at the same time in one API process.
MAX_IN_FLIGHT = 4


@dataclass
class _Request:
    job_type: JobType
    payload: dict[str, Any]
    client: ApiClient
    idempotency_key: str | None
    request_id: str | None
    future: asyncio.Future[Submission] = field(repr=False)
    job_id: uuid.UUID = field(default_factory=uuid.uuid4)

    @cached_property
    def fingerprint(self) -> str:
        """Only a request with an Idempotency-Key needs one (it is stored with the key)."""
        return fingerprint(self.job_type.name, self.payload)


class _BatchFailedError(Exception):
    """A batch's statements failed before COMMIT; nothing of it was written."""


Outcome = Submission | IntakeError


class GroupCommit:
    """Collects the job requests of one event loop and commits them in batches.

    Up to ``max_in_flight`` batches commit at once (each on its own connection), so the wait for
    one batch's WAL flush overlaps with the next batch's work; Postgres flushes concurrent commits
    together.
    """

    def __init__(self, max_batch: int = MAX_BATCH, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.max_batch, self.max_in_flight = max_batch, max_in_flight
        self._pending: list[_Request] = []
        self._flushers: set[asyncio.Task[None]] = set()

    async def submit(
        self, job_type: JobType, payload: dict[str, Any], *, client: ApiClient, idempotency_key: str | None = None
    ) -> Submission:
        """Accept one job; returns once it is committed (or raises the request's IntakeError)."""
        future: asyncio.Future[Submission] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(job_type, payload, client, idempotency_key, current_request_id(), future))
        if len(self._flushers) < self.max_in_flight:
            flusher = asyncio.create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        # A caller that goes away (client disconnect) does not cancel the batch it is part of.
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                outcomes = await commit_batch(batch)
            except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
                outcomes = [exc] * len(batch)  # type: ignore[list-item]
            for request, outcome in zip(batch, outcomes, strict=True):
                if request.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    request.future.set_exception(outcome)
                else:
                    request.future.set_result(outcome)


_committers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupCommit] = weakref.WeakKeyDictionary()


def group_commit() -> GroupCommit:
    """The running event loop's group committer (the API has one loop per process)."""
    loop = asyncio.get_running_loop()
    committer = _committers.get(loop)
    if committer is None:
        committer = _committers[loop] = GroupCommit()
    return committer


async def commit_batch(batch: Sequence[_Request]) -> list[Outcome]:
    """Commit a batch at once; if its statements fail, each request on its own."""
    try:
        return await _commit_together(batch)
    except _BatchFailedError:
        outcomes: list[Outcome] = []
        for request in batch:
            try:
                outcomes.extend(await _commit_together([request]))
            except Exception as exc:  # noqa: BLE001 - this request's own failure
                outcomes.append(exc)  # type: ignore[arg-type]
        return outcomes


async def _commit_together(batch: Sequence[_Request]) -> list[Outcome]:
    """Without Idempotency-Keys the batch is one statement, committed on its own (autocommit):
    one round trip. With keys, it is a transaction: take the keys' locks, read them, insert.
    """
    now = dt.datetime.now(dt.UTC)
    outcomes: list[Outcome | None] = [None] * len(batch)
    try:
        if any(request.idempotency_key is not None for request in batch):
            async with async_transaction() as session:
                await _resolve_keys(session, batch, outcomes, now)
                fresh = [request for request, outcome in zip(batch, outcomes, strict=True) if outcome is None]
                created = await _insert(await session.connection(), fresh, now) if fresh else {}
        else:
            async with async_engine().connect() as connection:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
                created = await _insert(connection, batch, now)
    except Exception as exc:
        # Nothing was written, unless the connection was lost (then nobody knows: no retry).
        lost = isinstance(exc, psycopg.OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
        if len(batch) > 1 and not lost:
            raise _BatchFailedError from exc
        raise
    for index, request in enumerate(batch):
        if outcomes[index] is None:
            job = created.get(request.job_id)
            outcomes[index] = (
                Submission(job, replayed=False)
                if job is not None
                else IntakeError(401, "unauthenticated", "unknown or revoked API key")
            )
    return [outcome for outcome in outcomes if outcome is not None]


async def _resolve_keys(
    session: AsyncSession, batch: Sequence[_Request], outcomes: list[Outcome | None], now: dt.datetime
) -> None:
    """Settle the requests whose Idempotency-Key decides their outcome (409, 422, replay)."""
    keyed: dict[tuple[uuid.UUID, str], int] = {}
    for index, request in enumerate(batch):
        if request.idempotency_key is None:
            continue
        scoped = (request.client.id, request.idempotency_key)
        if scoped in keyed:
            outcomes[index] = in_flight_error()
        else:
            keyed[scoped] = index
    locks = [func.pg_try_advisory_xact_lock(lock_key(*scoped)) for scoped in keyed]
    locked = (await session.execute(select(*locks))).one()
    held = {scoped: index for (scoped, index), got in zip(keyed.items(), locked, strict=True) if got}
    for scoped, index in keyed.items():
        if scoped not in held:
            outcomes[index] = in_flight_error()
    if not held:
        return
    previous_rows = await session.scalars(
        select(IdempotencyKey).where(tuple_(IdempotencyKey.client_id, IdempotencyKey.key).in_(list(held)))
    )
    expired = []
    for previous in previous_rows:
        index = held[(previous.client_id, previous.key)]
        try:
            replay = idempotency_outcome(previous, batch[index].fingerprint, now)
        except IntakeError as exc:
            outcomes[index] = exc
            continue
        if replay:
            outcomes[index] = Submission(await load_job(session, previous.job_id), replayed=True)
        else:
            expired.append(previous.id)
    if expired:
        await session.execute(delete(IdempotencyKey).where(IdempotencyKey.id.in_(expired)))


#: The columns a new job is inserted with; the rest are NULL or server defaults.
_JOB_COLUMNS = (
    "id", "type", "queue", "payload", "status", "attempts", "run_attempts", "max_attempts", "progress_percent",
    "cancel_requested", "publish_count", "client_id", "idempotency_key", "request_id",
)  # fmt: skip


@lru_cache(maxsize=1)
def _insert_statement() -> PreparedStatement:
    """One statement for a whole batch, the same for every batch size (compiled and prepared once).

    The batch is one JSON array of rows, one object per job with its columns and its request's
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
        .returning(Job.id, Job.created_at)
        .cte("new_jobs")
    )
    new_outbox = insert(OutboxMessage).from_select(["job_id"], select(new_jobs.c.id)).cte("new_outbox")
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


async def _insert(
    connection: AsyncConnection, requests: Sequence[_Request], now: dt.datetime
) -> dict[uuid.UUID, NewJob]:
    """The jobs of live clients, their outbox rows, events and Idempotency-Keys: one round trip."""
    columns = [
        new_job_columns(
            r.job_type,
            r.payload,
            id=r.job_id,
            client_id=r.client.id,
            idempotency_key=r.idempotency_key,
            request_id=r.request_id,
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
    return {job["id"]: NewJob(**job, created_at=created_at[job["id"]]) for job in columns if job["id"] in created_at}


def _dumps(value: Any) -> str:
    """JSON for the rows parameter: ids as their text."""
    return json.dumps(value, default=str)
