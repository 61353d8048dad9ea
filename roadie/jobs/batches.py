"""Job batches: jobs submitted together and told about together, with one ``batch.completed``.

A batch is created with its jobs in one transaction (through the one job-creation service), under
one Idempotency-Key for the whole request. Track uploads may join a batch made to expect them
(``expected_jobs``: an album). The counts and the one ``batch.completed`` are kept by triggers on
``jobs`` (migration 0011), under the batch row's lock.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.platform import ApiClient, IdempotencyKey, Job
from models.webhooks import Batch
from roadie.db import advisory_lock_key
from roadie.jobs.creation import JobRequest, fingerprint, in_flight_error, insert_jobs, replays
from roadie.jobs.intake import IntakeError, field_error
from roadie.jobs.options import RunOptions
from roadie.jobs.types import JobType
from roadie.logs import current_request_id
from roadie.settings import get_settings
from roadie.webhooks.dispatch import check_callback_url
from roadie.webhooks.urls import CallbackUrl

MAX_BATCH = 1000


class BatchJob(RunOptions):
    """One job of the batch; ``run_at``, ``delay_s`` and ``priority`` as on ``POST /v1/jobs``."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=100)
    payload: dict[str, Any] = Field(description="The job type's payload; {} for a type that needs none.")


class BatchRequest(BaseModel):
    """``POST /v1/batches``: the jobs, and optionally a callback_url for ``batch.completed``."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[BatchJob] = Field(max_length=MAX_BATCH, description="Created in one transaction; may be empty.")
    callback_url: CallbackUrl | None = None
    expected_jobs: int | None = Field(
        default=None,
        ge=1,
        le=MAX_BATCH,
        description="Jobs that complete the batch: these jobs plus track uploads that name it (an album). "
        "Default: the number of jobs.",
    )

    @model_validator(mode="after")
    def _expects_its_jobs(self) -> BatchRequest:
        if self.expected_jobs is None and not self.jobs:
            raise ValueError("a batch needs jobs, or expected_jobs for track uploads that will join it")
        if self.expected_jobs is not None and self.expected_jobs < len(self.jobs):
            raise ValueError("expected_jobs is less than the number of jobs given")
        return self


@dataclass(frozen=True)
class Created:
    batch: Batch
    job_ids: list[uuid.UUID]
    replayed: bool


async def create_batch(
    session: AsyncSession,
    client: ApiClient,
    request: BatchRequest,
    job_types_: list[JobType],
    *,
    idempotency_key: str | None,
) -> Created:
    """The batch and its jobs, in the caller's transaction; or, for a replayed key, the batch it made.

    ``job_types_`` are the jobs' types, already checked by the caller (known, in the client's scopes,
    payloads valid).
    """
    settings = get_settings()
    if len(request.jobs) > settings.batch_max_jobs:
        reason = f"at most {settings.batch_max_jobs} jobs"
        raise IntakeError(422, "batch_too_large", f"a batch holds {reason}", [field_error("jobs", reason)])
    if request.callback_url is not None:
        await check_callback_url(session, client.id, request.callback_url, "callback_url")
    now = dt.datetime.now(dt.UTC)
    identity = fingerprint({"batch": request.model_dump(mode="json")})
    if idempotency_key is not None:
        replayed = await _replayed(session, client, idempotency_key, identity, now)
        if replayed is not None:
            return replayed
    batch = Batch(
        id=uuid.uuid4(),
        client_id=client.id,
        expected_jobs=request.expected_jobs or len(request.jobs),
        callback_url=request.callback_url,
        request_id=current_request_id(),
    )
    session.add(batch)
    await session.flush()
    requests = [
        JobRequest(job_type, job.payload, client, batch_id=batch.id, options=job)
        for job_type, job in zip(job_types_, request.jobs, strict=True)
    ]
    outcomes = await insert_jobs(await session.connection(), requests, now) if requests else []
    for outcome in outcomes:
        if isinstance(outcome, IntakeError):  # the client was revoked since its key was looked up
            raise outcome
    if idempotency_key is not None:
        session.add(
            IdempotencyKey(
                client_id=client.id,
                key=idempotency_key,
                fingerprint=identity,
                batch_id=batch.id,
                expires_at=now + dt.timedelta(hours=settings.idempotency_ttl_hours),
            )
        )
    await session.flush()
    await session.refresh(batch)
    return Created(batch, [request.job_id for request in requests], replayed=False)


async def _replayed(
    session: AsyncSession, client: ApiClient, key: str, identity: str, now: dt.datetime
) -> Created | None:
    """The batch this key made with this body (a replay), else None; 409 while another request holds the key."""
    if not await session.scalar(select(func.pg_try_advisory_xact_lock(advisory_lock_key(client.id, key)))):
        raise in_flight_error()
    previous = await session.scalar(
        select(IdempotencyKey).where(IdempotencyKey.client_id == client.id, IdempotencyKey.key == key)
    )
    if previous is None:
        return None
    if not replays(previous, identity, now):
        await session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == previous.id))
        return None
    assert previous.batch_id is not None  # a job's key holds a job's fingerprint, which no batch has
    batch = await session.get_one(Batch, previous.batch_id)
    job_ids = (await session.scalars(select(Job.id).where(Job.batch_id == batch.id).order_by(Job.created_at))).all()
    return Created(batch, list(job_ids), replayed=True)


async def find_batch(session: AsyncSession, batch_id: uuid.UUID, client: ApiClient, *, lock: bool = False) -> Batch:
    """The client's batch (an admin's: any); 404 otherwise, the same answer as for one that does not exist."""
    query = select(Batch).where(Batch.id == batch_id)
    if "admin" not in client.scopes:
        query = query.where(Batch.client_id == client.id)
    if lock:
        query = query.with_for_update()
    batch = await session.scalar(query)
    if batch is None:
        raise IntakeError(404, "not_found", f"no batch {batch_id}")
    return batch


async def join_batch(session: AsyncSession, batch_id: uuid.UUID, client: ApiClient, field: str) -> uuid.UUID:
    """Check that one more job (a track upload) may join the batch, locking it until the caller commits."""
    try:
        batch = await find_batch(session, batch_id, client, lock=True)
    except IntakeError:
        raise IntakeError(422, "unknown_batch", f"no batch {batch_id}", [field_error(field, "no such batch")]) from None
    if batch.total_jobs >= batch.expected_jobs:
        reason = f"the batch already has its {batch.expected_jobs} jobs"
        raise IntakeError(422, "batch_full", reason, [field_error(field, reason)])
    return batch.id


async def status_counts(session: AsyncSession, batch_id: uuid.UUID) -> dict[str, int]:
    """How many of the batch's jobs are in each status now."""
    rows = await session.execute(select(Job.status, func.count()).where(Job.batch_id == batch_id).group_by(Job.status))
    return {str(status): int(count) for status, count in rows.all()}
