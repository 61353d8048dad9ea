"""Priorities: among the jobs waiting on a queue, a higher ``priority`` is handed to a worker first.

Runs on Redis in the main session and on RabbitMQ in ``tests/test_rabbitmq.py``'s subset.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from models.platform import Job, OutboxMessage
from roadie.db import transaction
from tests.conftest import Processes
from tests.helpers import wait_for_job, wait_until

BACKLOG = 500


def outbox_empty() -> bool:
    with transaction() as session:
        return session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def started_before(moment: dt.datetime, job_ids: list[uuid.UUID]) -> int:
    with transaction() as session:
        query = select(func.count()).where(Job.id.in_(job_ids), Job.started_at < moment)
        return int(session.scalar(query) or 0)


def test_a_high_priority_job_starts_before_a_backlog_of_500_low_priority_ones_drains(
    own_workers: Processes, client: httpx.Client
) -> None:
    low = {"type": "platform.echo", "payload": {"sleep_ms": 5}, "priority": 0}
    batch = client.post("/v1/batches", json={"jobs": [low] * BACKLOG})
    assert batch.status_code == 202, batch.text
    backlog = [uuid.UUID(job_id) for job_id in batch.json()["job_ids"]]
    wait_until(outbox_empty)  # all 500 are on the broker, ahead of it
    urgent = client.post("/v1/jobs", json={"type": "platform.echo", "payload": {}, "priority": 9}).json()
    wait_until(outbox_empty)

    own_workers.worker(queues="default", concurrency=1)

    done = wait_for_job(client, urgent["id"], "succeeded", timeout=60)
    assert (done["priority"], urgent["priority"]) == (9, 9)
    started = dt.datetime.fromisoformat(done["started_at"])
    assert started_before(started, backlog) <= 2  # at most what the worker had taken as it started


@pytest.mark.parametrize(
    ("priority", "reason"),
    [(10, "less than or equal to 9"), (-1, "greater than or equal to 0"), ("9", "valid integer"), (1.5, "integer")],
)
def test_a_priority_out_of_range_is_a_422_naming_the_field(client: httpx.Client, priority: Any, reason: str) -> None:
    response = client.post("/v1/jobs", json={"type": "platform.echo", "payload": {}, "priority": priority})

    assert response.status_code == 422, response.text
    (error,) = response.json()["error"]["fields"]
    assert error["field"] == "priority"
    assert reason in error["reason"]


@pytest.mark.usefixtures("worker")
def test_a_job_without_a_priority_gets_its_type_s_default(client: httpx.Client) -> None:
    job = client.post("/v1/jobs", json={"type": "platform.echo", "payload": {}}).json()

    assert job["priority"] == 5
    assert wait_for_job(client, job["id"], "succeeded")["priority"] == 5
