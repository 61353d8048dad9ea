"""Retention: finished jobs older than ``ROADIE_JOB_RETENTION_DAYS`` are deleted, a bounded batch per transaction.

A job goes with its attempts, its events and its child jobs (the foreign keys cascade). Never purged:

- a job that is not finished, or a parent with a child that is not;
- a job that is money or chain evidence's, or a track's upload job: ``payout_batches.job_id`` and
  ``tracks.job_id`` point at it (the rows those tables hold, the ledger's, the NFTs' and the indexer's,
  are never touched here);
- a job whose Idempotency-Key has not expired, so a retried request still replays it;
- a job of a batch, until the whole batch completed before the cutoff (then the batch goes with its jobs).

Each batch is its own short transaction that locks only the rows it deletes (``SKIP LOCKED``), so
intake, workers and the relay never wait behind a purge, and a run stops after its time budget.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, and_, delete, exists, func, select, text
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, aliased

from models.chain import PayoutBatch
from models.music import Track
from models.platform import IdempotencyKey, Job, JobStatus
from models.webhooks import Batch
from roadie.db import transaction
from roadie.settings import get_settings

log = logging.getLogger(__name__)

#: Jobs one transaction deletes (their attempts, events and children go with them).
PURGE_BATCH = 1000
#: Batches of jobs (``POST /v1/batches``, at most 1000 jobs each) one transaction deletes.
BATCHES_PER_TRANSACTION = 2
#: How long one run keeps purging; the next run carries on where it stopped.
RUN_BUDGET_S = 60.0


@dataclass(frozen=True)
class Purged:
    jobs: int  # top-level jobs; their children went with them
    batches: int
    #: The longest transaction of the run: how long its row locks were held at most.
    longest_transaction_s: float


def _not_kept(job: Any, now: dt.datetime) -> list[ColumnElement[bool]]:
    """Nothing keeps ``job`` (a Job or an alias), whatever its age.

    Each a NOT EXISTS of its own at the top of the WHERE, which Postgres turns into an anti-join
    on an index; as one NOT (… OR …) it ran each as a subplan, one of which read the whole table.
    """
    child = aliased(Job)
    return [
        ~exists().where(PayoutBatch.job_id == job.id),
        ~exists().where(Track.job_id == job.id),
        ~exists().where(IdempotencyKey.job_id == job.id, IdempotencyKey.expires_at > now),
        # The active statuses by name: the (status, created_at) index finds the few active jobs.
        ~exists().where(child.parent_id == job.id, child.status.in_(set(JobStatus) - JobStatus.finished())),
    ]


def _purgeable(job: Any, cutoff: dt.datetime, now: dt.datetime) -> ColumnElement[bool]:
    """``job`` finished before the cutoff and nothing keeps it."""
    return and_(job.status.in_(JobStatus.finished()), job.finished_at < cutoff, *_not_kept(job, now))


def _purge_jobs(
    status: str, after: dt.datetime, cutoff: dt.datetime, now: dt.datetime, limit: int
) -> list[dt.datetime]:
    """One transaction: up to ``limit`` top-level jobs of one finished status outside batches, the oldest
    created at or after ``after``; returns their creation times.

    One status at a time, oldest first from where the last batch stopped: a range scan of the
    (status, created_at) index that neither sorts nor walks again past what earlier batches deleted.
    """
    doomed = (
        select(Job.id)
        .where(
            Job.status == status,
            Job.created_at >= after,
            Job.created_at < cutoff,  # created_at <= finished_at: the index bounds the candidates
            _purgeable(Job, cutoff, now),
            Job.parent_id.is_(None),
            Job.batch_id.is_(None),
        )
        .order_by(Job.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with transaction() as session:
        _no_jit(session)
        return list(session.scalars(delete(Job).where(Job.id.in_(doomed)).returning(Job.created_at)))


def _purge_batches(cutoff: dt.datetime, now: dt.datetime, limit: int) -> tuple[int, int]:
    """One transaction: up to ``limit`` batches that completed before the cutoff, each with all its jobs.

    A batch's jobs are locked before its row, the order in which a job's own status change (a re-run)
    takes them (the batch counters' trigger), so the two never deadlock; a batch with a job another
    transaction holds is left for a later run.
    """
    member = aliased(Job)
    purgeable = (
        Batch.completed_at < cutoff,
        ~exists().where(member.batch_id == Batch.id, member.parent_id.is_(None), ~_purgeable(member, cutoff, now)),
        ~exists().where(IdempotencyKey.batch_id == Batch.id, IdempotencyKey.expires_at > now),
    )
    jobs = batches = 0
    with transaction() as session:
        _no_jit(session)
        candidates = session.scalars(select(Batch.id).where(*purgeable).order_by(Batch.completed_at).limit(limit))
        for batch_id in list(candidates):
            members = select(Job.id).where(Job.batch_id == batch_id)
            count = session.scalar(select(func.count()).select_from(members.subquery()))
            if len(session.scalars(members.with_for_update(skip_locked=True)).all()) != count:
                continue
            still = select(Batch.id).where(Batch.id == batch_id, *purgeable).with_for_update(skip_locked=True)
            if session.scalar(still) is None:
                continue
            deleted = session.execute(delete(Job).where(Job.batch_id == batch_id, Job.parent_id.is_(None)))
            session.execute(delete(Batch).where(Batch.id == batch_id))
            jobs, batches = jobs + cast("CursorResult[Any]", deleted).rowcount, batches + 1
    return jobs, batches


def _no_jit(session: Session) -> None:
    """The planner's estimate for a batch over a big table passes the JIT threshold; compiling then
    took 0.5 s of a batch that runs in 0.05 s."""
    session.execute(text("SET LOCAL jit = off"))


def purge_finished_jobs(budget_s: float = RUN_BUDGET_S) -> Purged:
    """Delete what retention allows, batch by batch, until nothing is left or ``budget_s`` has passed."""
    now = dt.datetime.now(dt.UTC)
    cutoff = now - dt.timedelta(days=get_settings().job_retention_days)
    deadline = time.monotonic() + budget_s
    jobs = batches = 0
    longest = 0.0
    for status in JobStatus.finished():
        after = dt.datetime.min.replace(tzinfo=dt.UTC)
        while time.monotonic() < deadline:
            began = time.monotonic()
            created = _purge_jobs(status, after, cutoff, now, PURGE_BATCH)
            longest = max(longest, time.monotonic() - began)
            jobs += len(created)
            if len(created) < PURGE_BATCH:
                break
            after = max(created)
    while time.monotonic() < deadline:
        began = time.monotonic()
        batch_jobs, batch_count = _purge_batches(cutoff, now, BATCHES_PER_TRANSACTION)
        longest = max(longest, time.monotonic() - began)
        jobs, batches = jobs + batch_jobs, batches + batch_count
        if batch_count < BATCHES_PER_TRANSACTION:
            break
    if jobs or batches:
        log.info(
            "jobs.purged",
            extra={"jobs": jobs, "batches": batches, "cutoff": cutoff.isoformat(), "longest_transaction_s": longest},
        )
    return Purged(jobs, batches, longest)
