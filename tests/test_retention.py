"""Retention: finished jobs past ``ROADIE_JOB_RETENTION_DAYS`` are purged; evidence and live keys keep theirs."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest
from freezegun import freeze_time
from sqlalchemy import func, select, text, update

from models.chain import PayoutBatch
from models.music import Track, User
from models.platform import ApiClient, IdempotencyKey, Job, JobAttempt, JobEvent, JobStatus
from models.webhooks import Batch
from roadie.db import transaction
from roadie.jobs.creation import new_job_columns
from roadie.jobs.retention import purge_finished_jobs
from roadie.jobs.types import job_types
from tests.helpers import submit, wait_for_job, wait_until

NOW = dt.datetime.now(dt.UTC)
OLD = NOW - dt.timedelta(days=40)


def stored_job(
    status: str = JobStatus.SUCCEEDED,
    finished_at: dt.datetime | None = OLD,
    created_at: dt.datetime = OLD,
    **fields: Any,
) -> uuid.UUID:
    """A job as the ledger holds it after it ran: with an attempt and events."""
    job_id = uuid.uuid4()
    columns = new_job_columns(job_types()["platform.echo"], {}, id=job_id, **fields)
    with transaction() as session:
        session.add(Job(**columns | {"status": status, "created_at": created_at, "finished_at": finished_at}))
        session.flush()
        session.add(JobAttempt(job_id=job_id, number=1, lease_id=uuid.uuid4(), worker="w", outcome="succeeded"))
        session.add_all([JobEvent(job_id=job_id, kind="created"), JobEvent(job_id=job_id, kind="finished")])
    return job_id


def existing(job_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    with transaction() as session:
        return set(session.scalars(select(Job.id).where(Job.id.in_(job_ids))))


def count(model: type) -> int:
    with transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def a_client() -> uuid.UUID:
    with transaction() as session:
        client = ApiClient(name=f"app-{uuid.uuid4().hex[:6]}", key_prefix="rk", key_hash=uuid.uuid4().hex, scopes=[])
        session.add(client)
        session.flush()
        return client.id


@pytest.mark.usefixtures("worker")
def test_jobs_that_ran_are_kept_for_the_retention_days_then_purged_with_their_attempts_and_events(
    client: httpx.Client,
) -> None:
    jobs = [wait_for_job(client, submit(client, {"n": n})["id"], "succeeded") for n in range(3)]
    pending = submit(client, {"sleep_ms": 60_000})  # running or queued: never purged, however old
    wait_for_job(client, pending["id"], {"running", "queued"})

    with freeze_time(NOW + dt.timedelta(days=29)):
        assert purge_finished_jobs().jobs == 0
    with freeze_time(NOW + dt.timedelta(days=31)):
        assert purge_finished_jobs().jobs == 3

    assert existing([uuid.UUID(j["id"]) for j in jobs]) == set()
    assert client.get(f"/v1/jobs/{jobs[0]['id']}").status_code == 404
    assert existing([uuid.UUID(pending["id"])]) == {uuid.UUID(pending["id"])}
    with transaction() as session:  # the attempts and events left are the pending job's
        assert set(session.scalars(select(JobAttempt.job_id))) == {uuid.UUID(pending["id"])}
        assert set(session.scalars(select(JobEvent.job_id))) == {uuid.UUID(pending["id"])}
    client.post(f"/v1/jobs/{pending['id']}/cancel")


def test_money_evidence_unfinished_children_and_live_keys_keep_their_jobs_and_the_rest_goes() -> None:
    purged = [stored_job(), stored_job(JobStatus.FAILED), stored_job(JobStatus.CANCELLED)]
    recent = stored_job(finished_at=NOW - dt.timedelta(days=5), created_at=NOW - dt.timedelta(days=5))
    unfinished = stored_job(JobStatus.QUEUED, finished_at=None)
    parent = stored_job()
    child = stored_job(parent_id=parent)
    busy_parent = stored_job()
    busy_child = stored_job(JobStatus.RUNNING, finished_at=None, parent_id=busy_parent)
    paid, uploaded = stored_job(), stored_job()
    with transaction() as session:
        session.add(PayoutBatch(key=f"rewards:{uuid.uuid4()}", mint_address="M" * 32, total=5, job_id=paid))
        artist = User(username=f"artist-{uuid.uuid4().hex[:6]}")
        session.add(artist)
        session.flush()
        session.add(Track(title="Kept", artist_id=artist.id, status="ingesting", job_id=uploaded))
    client_id = a_client()
    keyed, expired_key = stored_job(client_id=client_id), stored_job(client_id=client_id)
    with transaction() as session:
        for job_id, days in ((keyed, 1), (expired_key, -1)):
            expires = NOW + dt.timedelta(days=days)
            key = IdempotencyKey(client_id=client_id, key=f"k{days}", fingerprint="", job_id=job_id, expires_at=expires)
            session.add(key)
    done_batch, open_batch = uuid.uuid4(), uuid.uuid4()
    with transaction() as session:
        session.add(Batch(id=done_batch, client_id=client_id, expected_jobs=2, completed_at=OLD))
        session.add(Batch(id=open_batch, client_id=client_id, expected_jobs=3))
    in_done_batch = [stored_job(batch_id=done_batch) for _ in range(2)]
    in_open_batch = [stored_job(batch_id=open_batch) for _ in range(2)]

    result = purge_finished_jobs()

    kept = [recent, unfinished, busy_parent, busy_child, paid, uploaded, keyed, *in_open_batch]
    everything = [*purged, parent, child, expired_key, *in_done_batch, *kept]
    assert existing(everything) == set(kept)
    # Counted: top-level jobs (the child went with its parent).
    assert (result.jobs, result.batches) == (len(purged) + 1 + 1 + len(in_done_batch), 1)
    assert count(PayoutBatch) == 1
    with transaction() as session:
        assert session.scalar(select(PayoutBatch.job_id)) == paid
        assert set(session.scalars(select(Batch.id))) == {open_batch}
        assert set(session.scalars(select(IdempotencyKey.job_id))) == {keyed}


@pytest.mark.usefixtures("worker")
def test_a_key_whose_job_is_past_retention_still_replays_that_job_until_the_key_expires(client: httpx.Client) -> None:
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = client.post("/v1/jobs", json={"type": "platform.echo", "payload": {}}, headers=key).json()
    wait_for_job(client, first["id"], "succeeded")

    with freeze_time(NOW + dt.timedelta(hours=12, days=30)):  # a key kept longer than the job's retention
        with transaction() as session:
            session.execute(update(IdempotencyKey).values(expires_at=NOW + dt.timedelta(days=45)))
        assert purge_finished_jobs().jobs == 0

    replay = client.post("/v1/jobs", json={"type": "platform.echo", "payload": {}}, headers=key)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == first["id"]


@pytest.mark.usefixtures("worker")
def test_beat_s_purge_entry_runs_on_a_worker() -> None:
    from workers.app import app

    old = [stored_job() for _ in range(3)]

    app.send_task("platform.purge_finished_jobs", queue="default")

    wait_until(lambda: existing(old) == set(), timeout=30)


def test_more_jobs_than_one_batch_are_purged_batch_by_batch_even_when_they_share_a_creation_time() -> None:
    statement = """
        INSERT INTO jobs (id, type, queue, payload, status, attempts, run_attempts, max_attempts, progress_percent,
                          cancel_requested, publish_count, created_at, finished_at)
        SELECT gen_random_uuid(), 'platform.echo', 'default', '{}', 'failed', 1, 1, 5, 100, false, 1, :old, :old
        FROM generate_series(1, 2500)
    """
    with transaction() as session:
        session.execute(text(statement), {"old": OLD})

    result = purge_finished_jobs()

    assert result.jobs == 2500
    assert count(Job) == 0
    assert result.longest_transaction_s > 0
