"""Group commit for the intake API: the jobs of concurrent requests share one transaction.

Each ``POST /v1/jobs`` waits for a transaction that commits its job, its outbox row, its
``created`` event and (with an Idempotency-Key) its key row together, before it answers 202; the
requests that arrive while one batch is committing form the next batch. A batch therefore costs
one round trip for every job in it (plus one or two for Idempotency-Keys) and one WAL flush,
instead of one transaction per request, and the relay hears one NOTIFY per batch.

What a batch writes, and the Idempotency-Key rules, are those of ``roadie.jobs.creation`` (which
the track upload runs for its one request); every request still gets its own outcome. If a
batch's statements fail, it is rolled back and every request is retried in a transaction of its
own, so one bad request cannot take its neighbours down. A failed COMMIT is reported to every
request of the batch (its outcome is unknown, as with any failed commit).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import weakref
from collections.abc import Sequence
from typing import Any

import psycopg
from sqlalchemy.exc import DBAPIError

from models.platform import ApiClient
from roadie.db import async_engine, async_transaction
from roadie.jobs.creation import JobRequest, Outcome, Submission, insert_jobs, resolve_keys
from roadie.jobs.options import RunOptions
from roadie.jobs.types import JobType

#: Most requests one transaction takes; a busier moment makes several batches in a row.
MAX_BATCH = 128
#: Batches committing at the same time in one API process.
MAX_IN_FLIGHT = 4

_Pending = tuple[JobRequest, "asyncio.Future[Submission]"]


class _BatchFailedError(Exception):
    """A batch's statements failed before COMMIT; nothing of it was written."""


class GroupCommit:
    """Collects the job requests of one event loop and commits them in batches.

    Up to ``max_in_flight`` batches commit at once (each on its own connection), so the wait for
    one batch's WAL flush overlaps with the next batch's work; Postgres flushes concurrent commits
    together.
    """

    def __init__(self, max_batch: int = MAX_BATCH, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.max_batch, self.max_in_flight = max_batch, max_in_flight
        self._pending: list[_Pending] = []
        self._flushers: set[asyncio.Task[None]] = set()

    async def submit(
        self,
        job_type: JobType,
        payload: dict[str, Any],
        *,
        client: ApiClient,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        options: RunOptions | None = None,
    ) -> Submission:
        """Accept one job; returns once it is committed (or raises the request's IntakeError)."""
        future: asyncio.Future[Submission] = asyncio.get_running_loop().create_future()
        request = JobRequest(
            job_type, payload, client, idempotency_key, callback_url=callback_url, options=options or RunOptions()
        )
        self._pending.append((request, future))
        if len(self._flushers) < self.max_in_flight:
            flusher = asyncio.create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        # A caller that goes away (client disconnect) does not cancel the batch it is part of.
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            requests = [request for request, _ in batch]
            try:
                outcomes = await commit_batch(requests)
            except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
                outcomes = [exc] * len(batch)  # type: ignore[list-item]
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)


_committers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupCommit] = weakref.WeakKeyDictionary()


def group_commit() -> GroupCommit:
    """The running event loop's group committer (the API has one loop per process)."""
    loop = asyncio.get_running_loop()
    committer = _committers.get(loop)
    if committer is None:
        committer = _committers[loop] = GroupCommit()
    return committer


async def commit_batch(batch: Sequence[JobRequest]) -> list[Outcome]:
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


async def _commit_together(batch: Sequence[JobRequest]) -> list[Outcome]:
    """Without Idempotency-Keys the batch is one statement, committed on its own (autocommit):
    one round trip. With keys, it is a transaction: take the keys' locks, read them, insert.
    """
    now = dt.datetime.now(dt.UTC)
    try:
        if any(request.idempotency_key is not None for request in batch):
            async with async_transaction() as session:
                outcomes = await resolve_keys(session, batch, now)
                fresh = [request for request, outcome in zip(batch, outcomes, strict=True) if outcome is None]
                created = iter(await insert_jobs(await session.connection(), fresh, now) if fresh else [])
                return [next(created) if outcome is None else outcome for outcome in outcomes]
        async with async_engine().connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            return await insert_jobs(connection, batch, now)
    except Exception as exc:
        # Nothing was written, unless the connection was lost (then nobody knows: no retry).
        lost = isinstance(exc, psycopg.OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
        if len(batch) > 1 and not lost:
            raise _BatchFailedError from exc
        raise
