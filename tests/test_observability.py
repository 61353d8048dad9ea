"""JSON logs carrying the request id from the API to the worker, without secrets; Prometheus metrics."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import httpx
import pytest

from roadie.db import transaction
from roadie.jobs.creation import new_job
from roadie.jobs.types import job_types
from roadie.logs import REDACTED, bind, clear, redact, redact_text
from roadie.processes import ProcessGroup
from tests.conftest import Processes, free_port
from tests.helpers import metric_samples, metric_value, submit, wait_for_job

KEYPAIR = [secrets.randbelow(256) for _ in range(64)]


def test_secrets_are_masked_by_key_name_pattern_and_shape() -> None:
    event = {
        "event": "call failed: Authorization: Bearer abcdefgh12345678 with rk_live_Zx9_secretpart",
        "payload": {
            "api_key": "sk_fake",
            "nested": [{"Password": "hunter2"}, {"clientSecret": "s"}, {"refresh_token": "t"}],
            "wallet": {"private": "p"},
            "signer": KEYPAIR,
            "raw": bytes(64),
            "amount": 5,
        },
        "query": "GET /v1/jobs?token=abc&x=1",
        "repr": "{'api_key': 'sk_fake', 'keypair': [1, 2, 3]}",
    }

    cleaned = redact(None, "info", event)

    assert cleaned["event"] == "call failed: Authorization: Bearer [REDACTED] with rk_live_[REDACTED]"
    assert cleaned["payload"]["api_key"] == REDACTED
    assert cleaned["payload"]["nested"] == [
        {"Password": REDACTED},
        {"clientSecret": REDACTED},
        {"refresh_token": REDACTED},
    ]
    assert cleaned["payload"]["wallet"] == {"private": REDACTED}
    assert cleaned["payload"]["signer"] == cleaned["payload"]["raw"] == "[REDACTED keypair]"
    assert cleaned["payload"]["amount"] == 5
    assert cleaned["query"] == "GET /v1/jobs?token=[REDACTED]&x=1"
    assert cleaned["repr"] == "{'api_key': '[REDACTED]', 'keypair': [REDACTED]}"
    assert redact_text(json.dumps({"data": KEYPAIR})) == '{"data": [REDACTED keypair]}'
    assert redact_text("KeyError: 'job_id'") == "KeyError: 'job_id'"  # no secret name, nothing masked


def test_a_job_created_while_a_task_runs_inherits_its_request_id() -> None:
    bind(request_id="parent-request")
    try:
        child = new_job(job_types()["platform.echo"], {})
    finally:
        clear()

    assert child.request_id == "parent-request"


def test_an_unexpected_error_answers_500_with_the_request_id() -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.routing import Route

    from api.errors import on_unexpected_error
    from api.telemetry import RequestContextMiddleware

    async def boom(request: Request) -> None:
        raise RuntimeError("boom")

    app = Starlette(
        routes=[Route("/boom", boom)],
        middleware=[Middleware(RequestContextMiddleware)],
        exception_handlers={Exception: on_unexpected_error},
    )

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            return await http.get("/boom", headers={"X-Request-ID": "req-500"})

    response = asyncio.run(call())

    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-500"


@pytest.fixture
def metrics_worker(worker: ProcessGroup, processes: Processes) -> Iterator[tuple[ProcessGroup, int]]:
    """The shared worker is replaced, for the test, by one serving metrics on a free port and
    logging at DEBUG (where ``platform.echo`` logs its payload)."""
    worker.stop()
    port = free_port()
    overrides = {"ROADIE_WORKER_METRICS_PORT": str(port), "ROADIE_LOG_LEVEL": "DEBUG"}
    previous = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    try:
        own = processes.worker(concurrency=2)
    finally:
        for name, value in previous.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
    deadline = time.monotonic() + 30
    while not _scrape_ok(port):
        assert time.monotonic() < deadline, f"worker metrics did not come up:\n{own.log()}"
        time.sleep(0.2)
    yield own, port
    own.stop()
    worker.start()


def _scrape_ok(port: int) -> bool:
    with suppress(httpx.HTTPError):
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200
    return False


def _json_lines(process: ProcessGroup) -> list[dict[str, Any]]:
    lines = []
    for number, line in enumerate(process.log().splitlines(), 1):
        if not line.strip():
            continue
        try:
            parsed = json.loads(line)
        except ValueError:
            raise AssertionError(f"{process.name}.log line {number} is not JSON: {line!r}") from None
        assert isinstance(parsed, dict), line
        lines.append(parsed)
    return lines


def _process(processes: Processes, name: str) -> ProcessGroup:
    return next(p for p in processes.running if p.name == name)


def test_one_request_id_follows_a_job_through_json_logs_that_hold_no_secret(
    client: httpx.Client, processes: Processes, metrics_worker: tuple[ProcessGroup, int]
) -> None:
    own_worker, _ = metrics_worker
    request_id = f"test-{uuid.uuid4().hex}"
    api_secret, header_secret, query_secret, roadie_key = (f"fake{uuid.uuid4().hex}" for _ in range(4))
    payload = {
        "api_key": api_secret,
        "headers": {"Authorization": f"Bearer {header_secret}"},
        "note": f"call it with rk_live_{roadie_key}",
        "blob": KEYPAIR,
    }

    response = client.post(
        "/v1/jobs", json={"type": "platform.echo", "payload": payload}, headers={"X-Request-ID": request_id}
    )
    assert response.status_code == 202, response.text
    assert response.headers["x-request-id"] == request_id
    job = response.json()
    assert job["request_id"] == request_id
    assert wait_for_job(client, job["id"], "succeeded")["result"]["api_key"] == api_secret  # the ledger keeps it
    client.get(f"/v1/jobs/{job['id']}", params={"api_key": query_secret})  # in uvicorn's access line
    generated = client.get("/healthz").headers["x-request-id"]
    refused = client.get("/healthz", headers={"X-Request-ID": "two words"}).headers["x-request-id"]
    assert generated
    assert refused != "two words"

    deadline = time.monotonic() + 15
    while '"job.succeeded"' not in own_worker.log() or request_id not in own_worker.log():
        assert time.monotonic() < deadline, own_worker.log()
        time.sleep(0.1)

    api, relay, worker = (_process(processes, "api"), _process(processes, "relay"), own_worker)
    api_lines, relay_lines, worker_lines = _json_lines(api), _json_lines(relay), _json_lines(worker)
    accepted = [line for line in api_lines if line.get("request_id") == request_id and line.get("route") == "/v1/jobs"]
    assert [(line["event"], line["job_id"], line["status"]) for line in accepted] == [("http.request", job["id"], 202)]
    published = [line for line in relay_lines if line["event"] == "jobs.published" and job["id"] in line["job_ids"]]
    assert [line["request_ids"][line["job_ids"].index(job["id"])] for line in published] == [request_id]
    mine = [line for line in worker_lines if line.get("request_id") == request_id]
    assert {"job.succeeded", "echo.payload"} <= {line["event"] for line in mine}
    assert all(line["job_id"] == job["id"] and line["service"] == "worker" for line in mine)
    echoed = next(line["payload"] for line in mine if line["event"] == "echo.payload")
    assert echoed["api_key"] == REDACTED
    assert echoed["headers"] == {"Authorization": REDACTED}
    assert echoed["blob"] == "[REDACTED keypair]"
    assert echoed["note"] == "call it with rk_live_[REDACTED]"
    client_key = client.headers["authorization"].removeprefix("Bearer ")
    for process in (api, relay, worker):
        text = process.log()
        for secret in (api_secret, header_secret, query_secret, roadie_key, client_key, json.dumps(KEYPAIR)):
            assert secret not in text, f"a secret reached {process.name}.log"

    own_worker.stop()  # Celery's shutdown notice is JSON too
    assert "worker: Warm shutdown (MainProcess)" in [line["event"] for line in _json_lines(own_worker)]


def test_the_api_and_a_worker_expose_prometheus_metrics(
    client: httpx.Client, api_url: str, metrics_worker: tuple[ProcessGroup, int]
) -> None:
    _, port = metrics_worker
    succeeded = submit(client, {"n": 1})
    failed = submit(client, {"fail": "permanent"})
    retried = submit(client, {"fail": "transient", "fail_times": 1})
    for job_id, status in ((succeeded["id"], "succeeded"), (failed["id"], "failed"), (retried["id"], "succeeded")):
        wait_for_job(client, job_id, status)
    with transaction() as session:  # a job waiting a minute in a queue no relay will publish it to
        waiting = new_job(job_types()["platform.echo"], {})
        waiting.queue, waiting.created_at = "media", dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)
        session.add(waiting)

    deadline = time.monotonic() + 10
    while True:
        worker = metric_samples(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
        echo = {"type": "platform.echo"}
        counts = {
            outcome: metric_value(worker, "roadie_job_attempts_total", **echo, outcome=outcome)
            for outcome in ("succeeded", "failed", "retried")
        }
        if counts == {"succeeded": 2, "failed": 1, "retried": 1} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert counts == {"succeeded": 2, "failed": 1, "retried": 1}
    assert metric_value(worker, "roadie_job_run_seconds_count", **echo) == 4
    assert metric_value(worker, "roadie_job_run_seconds_bucket", **echo, le="+Inf") == 4

    api = metric_samples(httpx.get(f"{api_url}/metrics").text)
    accepted = {"method": "POST", "route": "/v1/jobs", "status": "202"}
    assert metric_value(api, "roadie_http_request_duration_seconds_count", **accepted) >= 3
    assert metric_value(api, "roadie_http_request_duration_seconds_bucket", **accepted, le="+Inf") >= 3
    read = {"method": "GET", "route": "/v1/jobs/{job_id}", "status": "200"}
    assert metric_value(api, "roadie_http_request_duration_seconds_count", **read) >= 1
    assert metric_value(api, "roadie_jobs_accepted_total", **echo) >= 3
    assert metric_value(api, "roadie_ledger_scrape_success") == 1
    assert metric_value(api, "roadie_queue_depth", queue="media") == 1
    assert metric_value(api, "roadie_queue_oldest_age_seconds", queue="media") >= 60
    assert metric_value(api, "roadie_queue_depth", queue="default") == 0
    assert metric_value(api, "roadie_queue_oldest_age_seconds", queue="default") == 0
    assert metric_value(api, "roadie_outbox_backlog") == 0
    assert metric_value(api, "roadie_outbox_oldest_age_seconds") == 0
    assert metric_value(api, "roadie_dead_letter_jobs", **echo) == 1
