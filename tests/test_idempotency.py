"""Idempotency-Key: one job per key and body, a conflict for another body, none for a race."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
from freezegun import freeze_time
from sqlalchemy import func, select

from models.platform import ApiClient, Job
from roadie.db import async_engine, transaction
from roadie.jobs.creation import Submission
from roadie.jobs.group_commit import group_commit
from roadie.jobs.types import job_types


def post(client: httpx.Client, key: str, payload: dict[str, object]) -> httpx.Response:
    return client.post("/v1/jobs", json={"type": "platform.echo", "payload": payload}, headers={"Idempotency-Key": key})


def job_count() -> int:
    with transaction() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def test_the_same_key_and_body_return_the_original_job(client: httpx.Client) -> None:
    first = post(client, "order-1", {"n": 1})
    again = post(client, "order-1", {"n": 1})

    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert job_count() == 1


def test_the_same_key_with_another_body_is_422(client: httpx.Client) -> None:
    post(client, "order-2", {"n": 1})

    response = post(client, "order-2", {"n": 2})

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert job_count() == 1


def test_keys_are_scoped_per_client(client: httpx.Client, make_client: Callable[..., httpx.Client]) -> None:
    other = make_client("jobs:write", "jobs:read", "jobs:rehearse")

    mine, theirs = post(client, "shared-key", {}), post(other, "shared-key", {})

    assert mine.json()["id"] != theirs.json()["id"]


def test_twenty_concurrent_posts_with_one_key_make_exactly_one_job(client: httpx.Client) -> None:
    key = f"race-{uuid.uuid4()}"
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda _: post(client, key, {"race": True}), range(20)))

    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {202, 409}
    accepted = {r.json()["id"] for r in responses if r.status_code == 202}
    assert len(accepted) == 1
    assert all(r.json()["error"]["code"] == "idempotency_in_flight" for r in responses if r.status_code == 409)
    assert job_count() == 1


def test_a_key_is_kept_24_hours_then_forgotten(client: httpx.Client) -> None:
    post(client, "warm-up", {})  # creates the API client row
    with transaction() as session:
        api_client = session.scalars(select(ApiClient)).one()
    echo = job_types()["platform.echo"]

    def post_at(moment: dt.datetime) -> Submission:
        """The API's own step for ``POST /v1/jobs`` (its group commit), with the clock at ``moment``."""

        async def submit() -> Submission:
            try:
                return await group_commit().submit(echo, {"n": 1}, client=api_client, idempotency_key="daily")
            finally:
                await async_engine().dispose()

        with freeze_time(moment):
            return asyncio.run(submit())

    start = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    first = post_at(start)
    replay = post_at(start + dt.timedelta(hours=23, minutes=59))
    fresh = post_at(start + dt.timedelta(hours=24, minutes=1))

    assert not first.replayed
    assert replay.replayed
    assert replay.job.id == first.job.id
    assert not fresh.replayed
    assert fresh.job.id != first.job.id
