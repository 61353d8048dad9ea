"""Finding, listing, cancelling and re-running jobs: the service behind the API and the CLI.

Creating jobs is ``roadie.jobs.creation``'s.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Select, delete, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from models.platform import ApiClient, Job, JobEvent, JobStatus, OutboxMessage


class IntakeError(Exception):
    """A request the service refuses; ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, code: str, message: str, fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields or []
        #: Headers the answer carries (a 429's Retry-After).
        self.headers: dict[str, str] = {}


def field_error(name: str, reason: str) -> dict[str, str]:
    """One entry of an IntakeError's ``fields``: which field was refused, and why."""
    return {"field": name, "reason": reason}


def _with_details(query: Select[Job]) -> Select[Job]:
    return query.options(
        selectinload(Job.children), selectinload(Job.events), selectinload(Job.attempt_rows)
    ).execution_options(populate_existing=True)


async def load_job(session: AsyncSession, job_id: uuid.UUID, *, lock: bool = False) -> Job:
    """A job with its details; ``lock``: FOR UPDATE, as anything that changes its status needs."""
    query = select(Job).where(Job.id == job_id)
    job = await session.scalar(_with_details(query.with_for_update() if lock else query))
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


class Paged(Protocol):
    """A row listed newest first by (created_at, id): a job, a webhook delivery."""

    @property
    def created_at(self) -> dt.datetime: ...

    @property
    def id(self) -> uuid.UUID: ...


def encode_cursor(row: Paged) -> str:
    raw = json.dumps([row.created_at.isoformat(), str(row.id)]).encode()
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
        # Its unpublished row (a delayed job's may wait for months) has nothing left to publish. One the
        # relay holds is skipped, not waited for (the relay locks rows, then jobs: this order would
        # deadlock); it is published, and the worker's claim refuses the cancelled job.
        unpublished = select(OutboxMessage.id).where(OutboxMessage.job_id == job.id).with_for_update(skip_locked=True)
        await session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_(unpublished)))
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
