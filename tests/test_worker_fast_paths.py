"""The worker's one-statement steps keep the lease rules; one heartbeat thread serves every job.

The runtime's functions are called in-process against the real database, without Celery.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import psycopg
import pytest
from sqlalchemy import func, select, update

from models.platform import Job, JobAttempt, JobStatus
from roadie import db
from roadie.db import autocommit, autocommit_engine, transaction
from roadie.jobs.creation import new_job
from roadie.jobs.errors import WaitForChildren
from roadie.jobs.runtime import (
    Claim,
    Dropped,
    Heartbeats,
    JobContext,
    claim,
    record_failure,
    record_success,
    record_wait,
)
from roadie.jobs.types import job_types
from roadie.settings import get_settings
from tests.conftest import PG_ADMIN


def queued_jobs(count: int) -> list[uuid.UUID]:
    """Queued echo jobs that no relay publishes (they have no outbox row)."""
    with transaction() as session:
        jobs = [new_job(job_types()["platform.echo"], {"n": n}) for n in range(count)]
        session.add_all(jobs)
        session.flush()
        return [job.id for job in jobs]


@pytest.fixture
def job_id(database: str) -> uuid.UUID:
    (created,) = queued_jobs(1)
    return created


def job_row(job_id: uuid.UUID) -> Job:
    with transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def attempts(job_id: uuid.UUID) -> list[tuple[str, str | None]]:
    with transaction() as session:
        rows = session.execute(
            select(JobAttempt.outcome, JobAttempt.message_id)
            .where(JobAttempt.job_id == job_id)
            .order_by(JobAttempt.number)
        )
        return [(outcome, message) for outcome, message in rows]


def set_job(job_id: uuid.UUID, **values: object) -> None:
    with transaction() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def context_of(claim_: Claim) -> JobContext:
    return JobContext(claim_.job_id, claim_.lease_id, claim_.attempt, claim_.run_attempt)


def test_a_waiting_job_is_claimed_with_its_attempt_and_only_the_lease_holder_finishes_it(job_id: uuid.UUID) -> None:
    first = claim(job_id, message_id="m1", worker="w1")
    assert isinstance(first, Claim)
    assert (first.attempt, first.run_attempt, first.payload) == (1, 1, {"n": 0})
    job = job_row(job_id)
    assert (job.status, job.lease_id, job.attempts) == (JobStatus.RUNNING, first.lease_id, 1)
    assert job.started_at is not None
    assert job.heartbeat_at is not None
    assert attempts(job_id) == [("running", "m1")]

    assert claim(job_id, message_id="m2", worker="w2") == Dropped.DUPLICATE  # another delivery while the lease is live
    again = claim(job_id, message_id="m1", worker="w1")  # the broker redelivered the same message
    assert isinstance(again, Claim)
    assert again.attempt == 2

    assert not record_success(first, {"late": True})  # the first lease is no longer current
    assert record_success(again, {"ok": True})
    job = job_row(job_id)
    assert (job.status, job.result, job.lease_id, job.progress_percent) == (
        JobStatus.SUCCEEDED,
        {"ok": True},
        None,
        100,
    )
    assert attempts(job_id) == [("lost", "m1"), ("succeeded", "m1")]
    assert claim(job_id, message_id="m3", worker="w1") == Dropped.DUPLICATE  # finished jobs are never claimed again


def test_a_job_asked_to_cancel_before_it_ran_is_cancelled_not_claimed(job_id: uuid.UUID) -> None:
    set_job(job_id, cancel_requested=True)

    assert claim(job_id, message_id="m1", worker="w1") == Dropped.NOT_RUN
    assert job_row(job_id).status == JobStatus.CANCELLED
    assert attempts(job_id) == []


def test_a_duplicate_delivery_of_a_job_waiting_for_its_children_is_dropped(job_id: uuid.UUID) -> None:
    set_job(job_id, status=JobStatus.WAITING, attempts=1, run_attempts=0)

    assert claim(job_id, message_id="late duplicate", worker="w1") == Dropped.DUPLICATE
    assert job_row(job_id).status == JobStatus.WAITING
    assert attempts(job_id) == []


def test_a_retry_is_claimed_only_once_it_is_due(job_id: uuid.UUID) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    set_job(job_id, status=JobStatus.RETRYING, attempts=1, run_attempts=1, next_attempt_at=later)
    assert claim(job_id, message_id="early", worker="w1") == Dropped.DUPLICATE

    set_job(job_id, next_attempt_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    due = claim(job_id, message_id="due", worker="w1")

    assert isinstance(due, Claim)
    assert (due.attempt, due.run_attempt) == (2, 2)
    assert job_row(job_id).next_attempt_at is None


def test_a_worker_whose_lease_was_taken_over_cannot_record_anything(job_id: uuid.UUID) -> None:
    stale = claim(job_id, message_id="m1", worker="cut-off")
    assert isinstance(stale, Claim)
    set_job(job_id, heartbeat_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))  # its beats stopped reaching us
    successor = claim(job_id, message_id="m2", worker="w2")
    assert isinstance(successor, Claim)
    set_job(job_id, progress_percent=10, progress_stage="successor's")
    before = job_row(job_id)

    assert not record_success(stale, {"late": True})
    assert record_failure(stale, RuntimeError("late"), max_attempts=5) is None
    assert record_wait(stale, WaitForChildren([uuid.uuid4()])) is None
    Heartbeats.beat([context_of(stale)])
    context_of(stale).progress(90, "stale")

    after = job_row(job_id)
    assert (after.status, after.lease_id, after.result) == (JobStatus.RUNNING, successor.lease_id, None)
    assert (after.progress_percent, after.progress_stage) == (10, "successor's")
    assert after.heartbeat_at == before.heartbeat_at
    assert attempts(job_id) == [("lost", "m1"), ("running", "m2")]
    assert record_success(successor, {"ok": True})


def test_one_beat_stamps_every_running_job_and_passes_on_cancel_requests(database: str) -> None:
    ids = queued_jobs(3)
    claims = [claim(i, message_id=f"m{i}", worker="w") for i in ids]
    contexts = [context_of(c) for c in claims if isinstance(c, Claim)]
    assert len(contexts) == len(ids)  # every job was claimed
    stale = JobContext(ids[2], uuid.uuid4(), 1, 1)  # a lease the job no longer has
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    for job in ids:
        set_job(job, heartbeat_at=long_ago)
    set_job(ids[1], cancel_requested=True)

    Heartbeats.beat([contexts[0], contexts[1], stale])

    assert job_row(ids[0]).heartbeat_at > long_ago  # type: ignore[operator]
    assert job_row(ids[1]).heartbeat_at > long_ago  # type: ignore[operator]
    assert job_row(ids[2]).heartbeat_at == long_ago  # only the current lease holder beats
    assert not contexts[0].cancel_requested
    assert contexts[1].cancel_requested
    assert not stale.cancel_requested


def test_one_thread_beats_for_all_of_a_process_s_jobs(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_settings(), "heartbeat_interval_s", 0.1)
    ids = queued_jobs(2)
    claims = [claim(i, message_id="m", worker="w") for i in ids]
    contexts = [context_of(c) for c in claims if isinstance(c, Claim)]
    assert len(contexts) == len(ids)  # every job was claimed
    heartbeats = Heartbeats()
    before = {i: job_row(i).heartbeat_at for i in ids}

    for context in contexts:
        heartbeats.add(context)
    time.sleep(0.5)
    heartbeats.remove(contexts[1])
    beaten_until = job_row(ids[1]).heartbeat_at
    time.sleep(0.4)

    assert [t.name for t in threading.enumerate()].count("heartbeats") == 1
    assert job_row(ids[0]).heartbeat_at > before[ids[0]]  # type: ignore[operator]
    assert beaten_until > before[ids[1]]  # type: ignore[operator]
    assert job_row(ids[1]).heartbeat_at == beaten_until  # a finished job is no longer beaten
    heartbeats.remove(contexts[0])


def test_a_pooled_connection_that_died_while_idle_is_replaced_before_use(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_IF_IDLE_S", 0.05)
    autocommit_engine().dispose()
    with autocommit() as connection:
        first = connection.execute(select(func.pg_backend_pid())).scalar_one()
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [first])
    time.sleep(0.1)

    with autocommit() as connection:
        second = connection.execute(select(func.pg_backend_pid())).scalar_one()

    assert second != first
