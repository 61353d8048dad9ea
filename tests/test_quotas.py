"""Per-client quotas: over its quota a client gets 429 with Retry-After and nothing is stored."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from models.platform import ApiClient, Job
from roadie.cli import main
from roadie.db import transaction
from roadie.settings import get_settings
from tests.conftest import Processes, create_key, free_port
from tests.helpers import api_healthy, wait_until

ECHO = {"type": "platform.echo", "payload": {}}


def a_client(make_client: Callable[..., httpx.Client]) -> tuple[httpx.Client, str]:
    name = f"app-{uuid.uuid4().hex[:8]}"
    return make_client("jobs:write", "jobs:read", "jobs:rehearse", name=name), name


def set_quota(admin: httpx.Client, name: str, **quota: Any) -> httpx.Response:
    return admin.put(f"/v1/admin/clients/{name}/quota", json={"jobs_per_minute": None, "jobs_per_day": None, **quota})


def jobs_of(name: str) -> int:
    with transaction() as session:
        query = select(func.count()).select_from(Job).join(ApiClient).where(ApiClient.name == name)
        return int(session.scalar(query) or 0)


def test_over_its_per_minute_quota_a_client_gets_429_with_retry_after_and_nothing_is_stored(
    make_client: Callable[..., httpx.Client], admin: httpx.Client
) -> None:
    client, name = a_client(make_client)
    assert set_quota(admin, name, jobs_per_minute=3).status_code == 200

    answers = [client.post("/v1/jobs", json=ECHO) for _ in range(4)]

    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert "3 jobs accepted per minute" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert jobs_of(name) == 3


def test_a_replayed_idempotent_request_costs_no_quota(
    make_client: Callable[..., httpx.Client], admin: httpx.Client
) -> None:
    client, name = a_client(make_client)
    set_quota(admin, name, jobs_per_minute=1)
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}

    first = client.post("/v1/jobs", json=ECHO, headers=key)
    retried = client.post("/v1/jobs", json=ECHO, headers=key)

    assert (first.status_code, retried.status_code) == (202, 202)
    assert retried.headers["Idempotent-Replayed"] == "true"
    assert client.post("/v1/jobs", json=ECHO).status_code == 429


def test_a_day_quota_counts_a_batch_s_jobs_and_a_quota_of_0_stops_a_client(
    make_client: Callable[..., httpx.Client], admin: httpx.Client
) -> None:
    client, name = a_client(make_client)
    stopped, stopped_name = a_client(make_client)
    set_quota(admin, name, jobs_per_day=5)
    set_quota(admin, stopped_name, jobs_per_minute=0)

    first = client.post("/v1/batches", json={"jobs": [ECHO] * 4})
    second = client.post("/v1/batches", json={"jobs": [ECHO] * 2})
    one_more = client.post("/v1/jobs", json=ECHO)
    none_at_all = [stopped.post("/v1/jobs", json=ECHO), stopped.post("/v1/batches", json={"jobs": [ECHO]})]

    assert (first.status_code, second.status_code, one_more.status_code) == (202, 429, 202)
    assert second.json()["error"]["code"] == "quota_exceeded"
    assert 60 < int(second.headers["Retry-After"]) <= 86_400
    assert jobs_of(name) == 5
    assert [a.status_code for a in none_at_all] == [429, 429]
    assert none_at_all[0].headers["Retry-After"] == "60"
    assert jobs_of(stopped_name) == 0


def test_an_admin_changes_a_quota_at_run_time_and_the_api_applies_it_without_a_restart(
    make_client: Callable[..., httpx.Client], admin: httpx.Client
) -> None:
    client, name = a_client(make_client)
    assert client.post("/v1/jobs", json=ECHO).status_code == 202  # the API now remembers the key

    changed = set_quota(admin, name, jobs_per_minute=0)

    assert changed.json() == {
        "client": name,
        "jobs_per_minute": 0,
        "jobs_per_day": None,
        "effective_jobs_per_minute": 0,
        "effective_jobs_per_day": None,
    }
    ttl = get_settings().api_key_cache_ttl_s
    wait_until(lambda: client.post("/v1/jobs", json=ECHO).status_code == 429, timeout=ttl + 10)
    set_quota(admin, name)  # back to the settings: no limit
    wait_until(lambda: client.post("/v1/jobs", json=ECHO).status_code == 202, timeout=ttl + 10)
    assert admin.get(f"/v1/admin/clients/{name}/quota").json()["effective_jobs_per_minute"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"jobs_per_minute": -1, "jobs_per_day": None}, "jobs_per_minute"),
        ({"jobs_per_minute": "10", "jobs_per_day": None}, "jobs_per_minute"),
        ({"jobs_per_minute": None, "jobs_per_day": 10**10}, "jobs_per_day"),
        ({"jobs_per_minute": None}, "jobs_per_day"),
    ],
)
def test_a_bad_quota_is_a_422_naming_the_field(
    make_client: Callable[..., httpx.Client], admin: httpx.Client, body: dict[str, Any], field: str
) -> None:
    _, name = a_client(make_client)

    response = admin.put(f"/v1/admin/clients/{name}/quota", json=body)

    assert response.status_code == 422, response.text
    assert [f["field"] for f in response.json()["error"]["fields"]] == [field]


def test_only_an_admin_sets_a_quota_and_only_of_a_live_client(
    make_client: Callable[..., httpx.Client], admin: httpx.Client
) -> None:
    client, name = a_client(make_client)

    assert (
        client.put(f"/v1/admin/clients/{name}/quota", json={"jobs_per_minute": 5, "jobs_per_day": None}).status_code
        == 403
    )
    assert set_quota(admin, "nobody").status_code == 404


def test_the_cli_sets_a_quota(make_client: Callable[..., httpx.Client]) -> None:
    _, name = a_client(make_client)

    done = CliRunner().invoke(main, ["keys", "quota", name, "--per-minute", "0", "--per-day", "1000"])
    bad = CliRunner().invoke(main, ["keys", "quota", name, "--per-minute", "lots"])

    assert done.exit_code == 0, done.output
    assert f"{name}: 0 jobs/minute, 1000 jobs/day" in done.output.splitlines()  # beside the quota.changed log line
    assert bad.exit_code == 2
    with transaction() as session:
        client = session.scalar(select(ApiClient).where(ApiClient.name == name))
        assert client is not None
        assert (client.jobs_per_minute, client.jobs_per_day) == (0, 1000)


def test_when_the_quota_counter_s_redis_is_down_intake_still_accepts_and_says_so(processes: Processes) -> None:
    port = free_port()
    env = os.environ | {"ROADIE_QUOTA_REDIS_URL": "redis://127.0.0.1:1/0", "ROADIE_CLIENT_JOBS_PER_MINUTE": "1"}
    api = processes.api(port, env)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: api_healthy(url), timeout=30)
    key = create_key(f"app-{uuid.uuid4().hex[:8]}", ["jobs:write", "jobs:rehearse"])
    try:
        answers = [
            httpx.post(f"{url}/v1/jobs", json=ECHO, headers={"Authorization": f"Bearer {key}"}, timeout=15)
            for _ in range(2)
        ]
    finally:
        api.stop()

    assert [a.status_code for a in answers] == [202, 202]  # the ledger accepts; the counter is what failed
    # Logged once: after a failure the API counts nothing for a few seconds rather than wait on each request.
    assert api.log().count('"quota.storage_unavailable"') == 1
