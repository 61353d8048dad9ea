"""Events are written by the database in the transaction of their fact: a fact rolled back has none,
and a batch's last two jobs ending at once write one ``batch.completed``. No worker runs here: the
tests record the facts themselves, as a worker's transaction would.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import func, select, text, update

from models.platform import Job
from models.webhooks import WebhookEvent
from roadie.db import sync_engine, transaction
from tests.fixtures.webhooks import Receiver, register_endpoint

pytestmark = pytest.mark.usefixtures("without_relay_or_workers")


def echo_job(client: httpx.Client) -> uuid.UUID:
    response = client.post("/v1/jobs", json={"type": "platform.echo", "payload": {}})
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


def test_a_rolled_back_outcome_writes_no_event_and_a_committed_one_does(
    client: httpx.Client, receiver: Receiver
) -> None:
    register_endpoint(client, receiver, ["job.succeeded"])
    job_id = echo_job(client)

    with sync_engine().connect() as connection:
        with connection.begin() as rolled_back:
            connection.execute(update(Job).where(Job.id == job_id).values(status="succeeded"))
            assert connection.scalar(select(func.count()).select_from(WebhookEvent)) == 1  # inside: written
            rolled_back.rollback()
        assert connection.scalar(select(func.count()).select_from(WebhookEvent)) == 0

    with transaction() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="succeeded"))
    with transaction() as session:
        (event,) = session.scalars(select(WebhookEvent)).all()
        assert (event.type, event.data["job"]["id"]) == ("job.succeeded", str(job_id))


def test_the_last_two_jobs_of_a_batch_ending_at_once_write_one_batch_completed(
    client: httpx.Client, receiver: Receiver
) -> None:
    register_endpoint(client, receiver, ["batch.completed"])
    response = client.post("/v1/batches", json={"jobs": [{"type": "platform.echo", "payload": {}}] * 2})
    assert response.status_code == 202, response.text
    batch = response.json()
    first, second = batch["job_ids"]

    # Two workers record the two outcomes at the same moment: the second blocks on the batch row
    # until the first commits, then counts on top of it.
    ready = threading.Barrier(2)

    def finish(job_id: str, hold_s: float) -> None:
        with sync_engine().begin() as connection:
            ready.wait()
            connection.execute(update(Job).where(Job.id == uuid.UUID(job_id)).values(status="succeeded"))
            time.sleep(hold_s)

    threads = [threading.Thread(target=finish, args=(first, 0.5)), threading.Thread(target=finish, args=(second, 0))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    with transaction() as session:
        events = session.scalars(select(WebhookEvent).where(WebhookEvent.type == "batch.completed")).all()
    assert len(events) == 1
    assert events[0].data["batch"] | {"created_at": None, "completed_at": None} == {
        "id": batch["id"], "total": 2, "succeeded": 2, "failed": 0, "cancelled": 0,
        "created_at": None, "completed_at": None,
    }  # fmt: skip


def test_the_platforms_own_events_go_to_endpoints_of_clients_that_may_read_the_ledger(
    make_client: Callable[..., httpx.Client], receiver: Receiver
) -> None:
    books = register_endpoint(make_client("ledger:read"), receiver, ["payout.finalized"])
    register_endpoint(make_client("jobs:write"), receiver, ["payout.finalized"])  # not its business
    register_endpoint(make_client("ledger:read"), receiver, ["payout.failed"])  # not subscribed

    with transaction() as session:
        listeners = session.execute(
            text("SELECT endpoint_id FROM roadie_webhook_listeners('payout.finalized', NULL)")
        ).scalars()
        assert list(listeners) == [books]
