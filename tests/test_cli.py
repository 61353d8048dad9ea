"""The ``roadie`` command administers keys and jobs with the same rules as the API."""

from __future__ import annotations

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from models.platform import ApiClient
from roadie.auth import hash_key
from roadie.cli import main
from roadie.db import transaction
from tests.helpers import submit, wait_for_job


def roadie(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_keys_create_prints_a_key_once_and_stores_only_its_hash(api_url: str) -> None:
    key = roadie("keys", "create", "--name", "web-app", "--scopes", "jobs:write,jobs:read").strip()

    with transaction() as session:
        stored = session.scalars(select(ApiClient).where(ApiClient.name == "web-app")).one()
    assert key.startswith("rk_live_")
    assert stored.key_hash == hash_key(key)
    assert key not in (stored.key_prefix, stored.key_hash)
    assert stored.scopes == ["jobs:read", "jobs:write"]
    response = httpx.get(f"{api_url}/v1/jobs", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200


def test_keys_create_refuses_unknown_scopes() -> None:
    result = CliRunner().invoke(main, ["keys", "create", "--name", "x", "--scopes", "root"])

    assert result.exit_code == 2
    assert "scopes must be some of" in result.output


@pytest.mark.usefixtures("worker")
def test_jobs_list_show_retry_and_cancel(client: httpx.Client) -> None:
    failed = wait_for_job(client, submit(client, {"fail": "permanent", "fail_times": 1})["id"], "failed")["id"]
    slow = submit(client, {"sleep_ms": 30_000})["id"]

    listing = roadie("jobs", "list", "--status", "failed")
    assert failed in listing
    assert slow not in listing
    assert '"code": "echo_permanent"' in roadie("jobs", "show", failed)

    unfiltered = CliRunner().invoke(main, ["jobs", "retry"])
    assert unfiltered.exit_code == 2
    assert "--all for every job" in unfiltered.output
    assert client.get(f"/v1/jobs/{failed}").json()["reruns"] == []
    assert "re-queued 1 job(s)" in roadie("jobs", "retry", "--error-code", "echo_permanent")
    assert wait_for_job(client, failed, "succeeded")["reruns"][0]["by"].startswith("cli:")

    roadie("jobs", "cancel", slow)
    assert wait_for_job(client, slow, "cancelled")["cancel_requested"]
