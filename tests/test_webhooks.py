"""Webhooks: an event recorded with its fact is delivered, signed, at least once, whatever the receiver does.

The receiver is a real uvicorn server verifying every signature with the ``standardwebhooks``
package; the API, the relay and the workers are the production processes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from models.platform import Job
from models.webhooks import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from roadie.db import transaction
from roadie.jobs.outbox import reap_lost
from roadie.processes import ProcessGroup
from roadie.settings import get_settings
from roadie.webhooks.urls import UnsafeUrl, check_url, resolve
from tests.conftest import Processes
from tests.fixtures.webhooks import Receiver, ReceiverServer, register_endpoint
from tests.helpers import wait_for_job, wait_until

pytestmark = pytest.mark.usefixtures("worker")

JOB_EVENTS = ["job.succeeded", "job.failed", "job.cancelled"]


def echo(client: httpx.Client, **payload: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"type": "platform.echo", "payload": payload})
    assert response.status_code == 202, response.text
    return dict(response.json())


def deliveries(event_type: str) -> list[WebhookDelivery]:
    with transaction() as session:
        return list(
            session.scalars(
                select(WebhookDelivery)
                .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                .where(WebhookEvent.type == event_type)
            )
        )


def attempts_of(delivery_id: uuid.UUID) -> list[WebhookAttempt]:
    with transaction() as session:
        return list(
            session.scalars(
                select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id).order_by(WebhookAttempt.number)
            )
        )


def job_error_code(job_id: uuid.UUID) -> str | None:
    with transaction() as session:
        return session.get_one(Job, job_id).error_code


def test_each_job_outcome_reaches_the_endpoint_signed_with_its_event_id_and_no_traceback(
    client: httpx.Client, receiver: Receiver
) -> None:
    register_endpoint(client, receiver, JOB_EVENTS)
    succeeded = echo(client, hello="world")
    failed = echo(client, fail="permanent")

    (ok,) = receiver.wait_for("job.succeeded")
    (bad,) = receiver.wait_for("job.failed")

    assert ok.data["job"]["id"] == succeeded["id"]
    assert ok.data["job"]["result"] == {"hello": "world"}
    assert bad.data["job"]["id"] == failed["id"]
    assert bad.data["job"]["error"] == {"code": "echo_permanent", "message": "rehearsed permanent failure on attempt 1"}
    assert "traceback" not in str(bad.data)
    assert ok.webhook_id != bad.webhook_id
    assert ok.webhook_id.startswith("evt_")
    assert all(post.verified for post in receiver.posts)


def test_a_cancelled_job_is_told_and_a_job_of_a_client_without_endpoints_writes_no_event(
    client: httpx.Client, make_client: Callable[..., httpx.Client], receiver: Receiver
) -> None:
    register_endpoint(client, receiver, ["job.cancelled"])
    slow = echo(client, sleep_ms=30_000)
    assert client.post(f"/v1/jobs/{slow['id']}/cancel").status_code == 202
    (cancelled,) = receiver.wait_for("job.cancelled")
    assert cancelled.data["job"]["id"] == slow["id"]

    quiet = make_client("jobs:write", "jobs:read", "jobs:rehearse")
    wait_for_job(quiet, echo(quiet)["id"], "succeeded")
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 1


def test_a_receiver_answering_500_twice_gets_three_attempts_and_one_delivery(
    client: httpx.Client, receiver: Receiver
) -> None:
    register_endpoint(client, receiver, ["job.succeeded"])
    receiver.fail_next = 2
    echo(client)

    posts = receiver.wait_for("job.succeeded", count=3)
    (delivery,) = wait_until(lambda: [d for d in deliveries("job.succeeded") if d.status == "delivered"])

    assert len({post.webhook_id for post in posts}) == 1  # the same event each time: the receiver can de-duplicate
    assert [a.status_code for a in attempts_of(delivery.id)] == [500, 500, 200]
    assert delivery.attempts == 3


def test_a_receiver_down_for_a_while_gets_every_event_when_it_is_back(
    client: httpx.Client, receiver_server: ReceiverServer
) -> None:
    receiver = receiver_server.receiver
    register_endpoint(client, receiver, ["job.succeeded"])
    jobs = [echo(client, n=n) for n in range(5)]
    for job in jobs:
        wait_for_job(client, job["id"], "succeeded")
    wait_until(
        lambda: all(d.attempts >= 1 for d in deliveries("job.succeeded")) and len(deliveries("job.succeeded")) == 5
    )

    receiver_server.start()

    received = receiver.wait_for("job.succeeded", count=5)
    assert {post.data["job"]["id"] for post in received} == {job["id"] for job in jobs}
    wait_until(lambda: all(d.status == "delivered" for d in deliveries("job.succeeded")))


def test_a_refusal_fails_the_delivery_and_410_disables_the_endpoint(client: httpx.Client, receiver: Receiver) -> None:
    endpoint_id = register_endpoint(client, receiver, ["job.succeeded"])
    receiver.behaviour = "reject"
    echo(client)
    (rejected,) = wait_until(lambda: [d for d in deliveries("job.succeeded") if d.status == "failed"])
    assert (rejected.attempts, rejected.last_status_code) == (1, 400)
    # The delivery's row is written before the runtime records its job's outcome, a moment later.
    wait_until(lambda: job_error_code(rejected.job_id) == "webhook_rejected")

    receiver.behaviour = "gone"
    echo(client)
    wait_until(lambda: len([d for d in deliveries("job.succeeded") if d.status == "failed"]) == 2)
    with transaction() as session:
        endpoint = session.get_one(WebhookEndpoint, endpoint_id)
        assert (endpoint.enabled, endpoint.disabled_reason) == (False, "the receiver answered 410 Gone")
    assert len(receiver.posts) == 2


@pytest.mark.parametrize("behaviour", ["stall", "trickle"])
def test_a_receiver_that_never_finishes_answering_costs_one_timeout_per_attempt(
    client: httpx.Client, receiver: Receiver, behaviour: str
) -> None:
    register_endpoint(client, receiver, ["job.succeeded"])
    receiver.behaviour = behaviour
    echo(client)

    (delivery,) = wait_until(lambda: [d for d in deliveries("job.succeeded") if d.attempts >= 2], timeout=30)
    first, second = attempts_of(delivery.id)[:2]
    timeout_ms = get_settings().webhook_timeout_s * 1000
    assert first.error == second.error == "no complete answer within 2 s"
    assert timeout_ms <= first.latency_ms < timeout_ms + 1500


def test_a_100_mb_answer_is_read_only_for_its_first_2_kb(client: httpx.Client, receiver: Receiver) -> None:
    register_endpoint(client, receiver, ["job.succeeded"])
    receiver.behaviour = "huge"
    echo(client)

    (delivery,) = wait_until(lambda: [d for d in deliveries("job.succeeded") if d.status == "delivered"])
    (attempt,) = attempts_of(delivery.id)
    assert attempt.response_excerpt == "x" * 2048
    assert attempt.latency_ms < 2000


def test_a_killed_webhooks_worker_mid_delivery_still_delivers_and_the_receiver_sees_the_same_id(
    client: httpx.Client, receiver: Receiver, own_workers: Processes
) -> None:
    worker = own_workers.worker(queues="default")
    webhooks: ProcessGroup = own_workers.worker(queues="webhooks")
    register_endpoint(client, receiver, ["job.succeeded"])
    receiver.behaviour = "stall"
    echo(client)
    receiver.wait_for("job.succeeded")  # the first POST is in the receiver's hands

    webhooks.kill()
    receiver.behaviour = "ok"
    own_workers.worker(queues="webhooks")
    wait_until(reap_lost, timeout=15)  # beat's reaper: the lost delivery's heartbeat stopped

    posts = receiver.wait_for("job.succeeded", count=2, timeout=60)
    assert len({post.webhook_id for post in posts}) == 1
    wait_until(lambda: [d for d in deliveries("job.succeeded") if d.status == "delivered"], timeout=30)
    worker.stop()


def test_the_signing_secret_appears_in_no_log_line(
    client: httpx.Client, receiver: Receiver, processes: Processes
) -> None:
    register_endpoint(client, receiver, ["job.succeeded"])
    wait_for_job(client, echo(client)["id"], "succeeded")
    receiver.wait_for("job.succeeded")

    (secret,) = receiver.secrets
    for log in processes.log_dir.glob("*.log"):
        text_ = log.read_text(errors="replace")
        assert secret.removeprefix("whsec_") not in text_, log.name


def test_a_batch_is_created_in_one_transaction_followed_by_status_and_completed_once(
    client: httpx.Client, receiver: Receiver
) -> None:
    register_endpoint(client, receiver, ["batch.completed"])
    jobs = [{"type": "platform.echo", "payload": {"n": n}} for n in range(3)] + [
        {"type": "platform.echo", "payload": {"fail": "permanent"}}
    ]
    headers = {"Idempotency-Key": f"album-{uuid.uuid4()}"}
    created = client.post("/v1/batches", json={"jobs": jobs}, headers=headers)
    replayed = client.post("/v1/batches", json={"jobs": jobs}, headers=headers)
    assert created.status_code == replayed.status_code == 202, created.text
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json()["id"] == created.json()["id"]
    assert len(created.json()["job_ids"]) == 4

    (completed,) = receiver.wait_for("batch.completed")
    assert completed.data["batch"]["succeeded"] == 3
    assert completed.data["batch"]["failed"] == 1
    view = client.get(f"/v1/batches/{created.json()['id']}").json()
    assert view["by_status"] == {"succeeded": 3, "failed": 1}
    assert view["progress"] == 100
    assert view["completed_at"] is not None
    time.sleep(0.5)
    assert len(receiver.events("batch.completed")) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"jobs": []}, "body"),
        ({"jobs": [{"type": "no.such", "payload": {}}]}, "jobs[0].type"),
        ({"jobs": [{"type": "platform.echo", "payload": {"sleep_ms": -1}}]}, "jobs[0].payload.sleep_ms"),
        ({"jobs": [{"type": "platform.echo", "payload": {}}], "expected_jobs": 0}, "expected_jobs"),
        ({"jobs": [{"type": "platform.echo", "payload": {}}], "callback_url": "ftp://x"}, "callback_url"),
    ],
)
def test_a_bad_batch_is_a_422_naming_the_field_and_stores_nothing(
    client: httpx.Client, body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/batches", json=body)

    assert response.status_code == 422, response.text
    assert field in [f["field"] for f in response.json()["error"]["fields"]], response.text
    with transaction() as session:
        assert session.scalar(text("SELECT count(*) FROM batches")) == 0


def test_a_callback_url_needs_an_endpoint_to_sign_with_and_then_gets_the_jobs_events(
    client: httpx.Client, receiver: Receiver
) -> None:
    body = {"type": "platform.echo", "payload": {}, "callback_url": receiver.url}
    refused = client.post("/v1/jobs", json=body)
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "no_webhook_endpoint"

    register_endpoint(client, receiver, ["track.ready"], url="http://127.0.0.1:9/unused")  # subscribes to no job event
    accepted = client.post("/v1/jobs", json=body)
    assert accepted.status_code == 202, accepted.text

    (event,) = receiver.wait_for("job.succeeded")
    assert event.data["job"]["id"] == accepted.json()["id"]
    assert event.verified


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/",
        "https://10.0.0.1/",
        "https://169.254.169.254/latest",
        "https://[::1]/",
        "https://localhost/",
    ],
)
def test_a_url_that_resolves_to_a_private_address_is_refused_unless_its_host_is_allowed(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROADIE_WEBHOOK_ALLOWED_HOSTS", "[]")
    get_settings.cache_clear()
    try:
        with pytest.raises(UnsafeUrl, match="private, loopback, link-local or metadata"):
            resolve(url)
        host = httpx.URL(url).host
        monkeypatch.setenv("ROADIE_WEBHOOK_ALLOWED_HOSTS", f'["{host}"]')
        get_settings.cache_clear()
        assert resolve(url).address in {"127.0.0.1", "10.0.0.1", "169.254.169.254", "::1"}
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com/hook", "must be https"),
        ("https://user:pw@example.com/hook", "must not carry credentials"),
        ("example.com/hook", "must be an absolute https URL"),
        ("https://example.com:99999/", "is not a valid URL"),
        ("https://example.com/" + "a" * 2048, "at most 2048"),
    ],
)
def test_a_webhook_url_must_be_https_without_credentials(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrl, match=reason):
        check_url(url)


def test_a_delivery_refused_at_delivery_time_by_its_address_fails_without_a_post(
    client: httpx.Client, receiver: Receiver
) -> None:
    register_endpoint(client, receiver, ["job.succeeded"], url=f"https://127.0.0.2:{receiver.port}/hooks")
    echo(client)

    (delivery,) = wait_until(lambda: [d for d in deliveries("job.succeeded") if d.status == "failed"])
    assert delivery.last_error == (
        "refused: the URL resolves to 127.0.0.2, a private, loopback, link-local or metadata address"
    )
    assert receiver.posts == []
