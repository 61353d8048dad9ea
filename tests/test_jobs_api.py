"""Submitting and following jobs over HTTP, with a real worker running them."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from roadie.processes import ProcessGroup
from tests.helpers import submit, wait_for_job

pytestmark = pytest.mark.usefixtures("worker")


def test_an_echo_job_is_accepted_then_succeeds_with_its_payload_as_result(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", json={"type": "platform.echo", "payload": {"hello": "world"}})

    assert response.status_code == 202
    accepted = response.json()
    assert accepted["status"] == "queued"
    assert response.headers["location"] == accepted["url"]
    assert accepted["url"].endswith(f"/v1/jobs/{accepted['id']}")
    job = wait_for_job(client, accepted["id"], "succeeded")
    assert job["result"] == {"hello": "world"}
    assert job["attempts"] == 1
    assert job["progress"]["percent"] == 100
    assert [a["outcome"] for a in job["attempt_history"]] == ["succeeded"]


def test_a_transient_failure_is_retried_with_backoff_until_it_succeeds(client: httpx.Client) -> None:
    job = submit(client, {"fail": "transient", "fail_times": 2})

    job = wait_for_job(client, job["id"], "succeeded")

    assert job["attempts"] == 3
    assert [a["outcome"] for a in job["attempt_history"]] == ["retrying", "retrying", "succeeded"]
    assert job["error"] is None


def test_a_permanent_failure_fails_at_once_with_its_code_and_message(client: httpx.Client) -> None:
    job = submit(client, {"fail": "permanent"})

    job = wait_for_job(client, job["id"], "failed")

    assert job["attempts"] == 1
    assert job["error"]["code"] == "echo_permanent"
    assert "rehearsed permanent failure" in job["error"]["message"]
    assert "traceback" not in job["error"]  # only admins see tracebacks


def test_a_job_that_keeps_failing_transiently_is_dead_lettered_after_its_last_attempt(
    client: httpx.Client, admin: httpx.Client
) -> None:
    job = submit(client, {"fail": "transient"})

    job = wait_for_job(client, job["id"], "failed")

    assert job["attempts"] == job["max_attempts"] == 5
    assert job["error"]["code"] == "echo_transient"
    assert job["error"]["message"].startswith("gave up after 5 attempts")
    dead_letters = admin.get("/v1/jobs", params={"status": "failed"}).json()["jobs"]
    assert [j["id"] for j in dead_letters] == [job["id"]]


def test_cancelling_a_running_job_stops_it(client: httpx.Client) -> None:
    job = submit(client, {"sleep_ms": 20_000})
    wait_for_job(client, job["id"], "running")

    response = client.post(f"/v1/jobs/{job['id']}/cancel")

    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True
    job = wait_for_job(client, job["id"], "cancelled", timeout=10)
    assert [a["outcome"] for a in job["attempt_history"]] == ["cancelled"]


def test_cancelling_a_finished_job_is_a_conflict(client: httpx.Client) -> None:
    job = wait_for_job(client, submit(client, {})["id"], "succeeded")

    response = client.post(f"/v1/jobs/{job['id']}/cancel")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "job_finished"


def test_a_client_sees_only_its_own_jobs(client: httpx.Client, make_client: Callable[..., httpx.Client]) -> None:
    other = make_client("jobs:write", "jobs:read", "jobs:rehearse")
    job = submit(client, {})

    assert other.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert other.get("/v1/jobs").json()["jobs"] == []


def test_a_cancelled_waiting_job_is_never_run(client: httpx.Client, worker: ProcessGroup) -> None:
    worker.stop()
    try:
        job = submit(client, {"marker": "cancel-me"})
        cancelled = client.post(f"/v1/jobs/{job['id']}/cancel").json()
        assert cancelled["status"] == "cancelled"
    finally:
        worker.start()
    # the worker receives the message and drops it: the job stays cancelled with no attempt
    follow_up = wait_for_job(client, submit(client, {})["id"], "succeeded")
    assert follow_up["status"] == "succeeded"
    job = client.get(f"/v1/jobs/{job['id']}").json()
    assert job["status"] == "cancelled"
    assert job["attempts"] == 0
