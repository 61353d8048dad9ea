"""Delayed jobs: ``run_at`` or ``delay_s`` keep a job ``scheduled``, in the ledger only, until it is due."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select

from models.platform import Job, OutboxMessage
from roadie.db import transaction
from tests.conftest import ON_REDIS, create_key
from tests.fixtures.media import AudioFiles, post_track
from tests.helpers import wait_for_job, wait_until
from tests.test_admin_console import sign_in

pytestmark = pytest.mark.usefixtures("worker")


def delayed(client: httpx.Client, **timing: Any) -> httpx.Response:
    return client.post("/v1/jobs", json={"type": "platform.echo", "payload": {"n": 1}, **timing})


def parse(timestamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(timestamp)


def jobs_stored() -> int:
    with transaction() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def test_a_job_with_delay_s_is_scheduled_listed_and_then_runs_at_its_time(client: httpx.Client) -> None:
    response = delayed(client, delay_s=3)

    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "scheduled"
    run_at = parse(job["run_at"])
    assert run_at - parse(job["created_at"]) == pytest.approx(dt.timedelta(seconds=3), abs=dt.timedelta(seconds=0.5))
    listed = client.get("/v1/jobs", params={"status": "scheduled"}).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert client.get(job["url"]).json()["status"] == "scheduled"

    done = wait_for_job(client, job["id"], "succeeded", timeout=30)
    assert parse(done["started_at"]) >= run_at  # never early
    assert done["run_at"] == job["run_at"]
    assert done["attempts"] == 1


def test_a_scheduled_job_is_only_in_the_ledger_so_a_broker_flush_loses_nothing(
    client: httpx.Client, broker: redis.Redis
) -> None:
    from workers.app import redis_queue_length

    job = delayed(client, delay_s=2).json()
    if ON_REDIS:
        broker.flushdb()
        assert redis_queue_length(broker, "default") == 0

    assert wait_for_job(client, job["id"], "succeeded", timeout=30)["attempts"] == 1


def test_run_at_in_the_past_runs_now_and_an_offset_is_honoured(client: httpx.Client) -> None:
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    now_job = delayed(client, run_at=past).json()
    later = dt.datetime.now(dt.timezone(dt.timedelta(hours=-5))) + dt.timedelta(seconds=2)
    later_job = delayed(client, run_at=later.isoformat()).json()

    assert (now_job["status"], now_job["run_at"]) == ("queued", None)
    assert later_job["status"] == "scheduled"
    assert parse(later_job["run_at"]) == later
    wait_for_job(client, now_job["id"], "succeeded")
    assert parse(wait_for_job(client, later_job["id"], "succeeded")["started_at"]) >= later


def test_cancelling_a_scheduled_job_removes_it_from_the_outbox_and_it_never_runs(client: httpx.Client) -> None:
    job = delayed(client, delay_s=1).json()

    response = client.post(f"/v1/jobs/{job['id']}/cancel")

    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    follow_up = delayed(client).json()  # a job after it runs: the worker and relay are live
    wait_for_job(client, follow_up["id"], "succeeded")
    wait_until(lambda: dt.datetime.now(dt.UTC) > parse(job["run_at"]) + dt.timedelta(seconds=1), timeout=5)
    after = client.get(job["url"]).json()
    assert (after["status"], after["attempts"], after["started_at"]) == ("cancelled", 0, None)


def test_a_retried_request_with_the_same_key_and_delay_replays_the_same_job(client: httpx.Client) -> None:
    key = {"Idempotency-Key": f"release-{uuid.uuid4()}"}
    body = {"type": "platform.echo", "payload": {}, "delay_s": 600}

    first = client.post("/v1/jobs", json=body, headers=key)
    second = client.post("/v1/jobs", json=body, headers=key)
    other = client.post("/v1/jobs", json={**body, "delay_s": 601}, headers=key)

    assert first.status_code == second.status_code == 202
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["run_at"] == first.json()["run_at"]
    assert other.status_code == 422  # another delay is another request


@pytest.mark.parametrize(
    ("timing", "field", "reason"),
    [
        ({"delay_s": -1}, "delay_s", "greater than or equal to 0"),
        ({"delay_s": "60"}, "delay_s", "valid number"),
        ({"delay_s": 366 * 86_400}, "delay_s", "more than 365 days"),
        ({"delay_s": 10**12}, "delay_s", "less than or equal to"),
        ({"run_at": "next friday"}, "run_at", "datetime"),
        ({"run_at": "2030-01-01T00:00:00"}, "run_at", "timezone"),
        ({"run_at": "9999-12-31T23:59:59+00:00"}, "run_at", "more than 365 days ahead"),
        ({"run_at": "2026-01-01T00:00:00Z", "delay_s": 5}, "delay_s", "not both"),
    ],
)
def test_a_bad_delay_is_a_422_naming_the_field_and_stores_nothing(
    client: httpx.Client, timing: dict[str, Any], field: str, reason: str
) -> None:
    response = delayed(client, **timing)

    assert response.status_code == 422, response.text
    (error,) = response.json()["error"]["fields"]
    assert error["field"] == field
    assert reason in error["reason"]
    assert jobs_stored() == 0


def test_a_track_upload_can_be_delayed_and_its_ingest_waits(
    make_client: Callable[..., httpx.Client], audio: AudioFiles
) -> None:
    uploader = make_client("tracks:write", "jobs:read", "jobs:write")
    response = post_track(uploader, audio.song("later.wav"), delay_s=600)

    assert response.status_code == 202, response.text
    job = response.json()
    assert (job["type"], job["status"]) == ("track.ingest", "scheduled")
    assert uploader.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    bad = post_track(uploader, audio.song("later.wav"), delay_s=-5)
    assert bad.status_code == 422
    assert bad.json()["error"]["fields"][0]["field"] == "metadata.delay_s"


def test_the_console_lists_scheduled_jobs_with_their_time_and_a_job_page_says_when_it_runs(
    api_url: str, client: httpx.Client
) -> None:
    job = delayed(client, delay_s=3600).json()
    delayed(client)  # a job due at once is not listed among the scheduled

    with httpx.Client(base_url=api_url, timeout=15) as browser_like:
        sign_in(browser_like, create_key(f"ops-{uuid.uuid4().hex[:6]}", ["admin"]))
        listing = browser_like.get("/admin/", params={"status": "scheduled"})
        page = browser_like.get(f"/admin/jobs/{job['id']}")

    assert listing.status_code == page.status_code == 200
    assert listing.text.count('<span class="status scheduled">') == 1
    assert job["id"][:8] in listing.text
    assert "runs " in listing.text
    assert 'id="job-run-at"' in page.text
    assert '<dd id="job-priority">5 ' in page.text
    assert '<span class="status scheduled" id="job-status">scheduled</span>' in page.text
