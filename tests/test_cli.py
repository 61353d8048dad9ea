"""The ``roadie`` command administers keys and jobs with the same rules as the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from models.platform import SCOPES, ApiClient
from roadie.auth import hash_key
from roadie.cli import main
from roadie.db import transaction
from tests.conftest import free_port
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


def test_keys_create_refuses_unknown_scopes_and_taken_names_in_one_line() -> None:
    roadie("keys", "create", "--name", "taken", "--scopes", "jobs:read")

    unknown = CliRunner().invoke(main, ["keys", "create", "--name", "x", "--scopes", "root"])
    taken = CliRunner().invoke(main, ["keys", "create", "--name", "taken", "--scopes", "jobs:read"])

    assert unknown.exit_code == taken.exit_code == 1
    assert unknown.output == "Error: scopes must be some of " + ", ".join(SCOPES) + "; got root\n"
    assert taken.output == "Error: a key named 'taken' already exists\n"


def test_keys_create_help_lists_the_real_scopes() -> None:
    help_text = " ".join(roadie("keys", "create", "--help").split())

    assert "some of: " + ", ".join(SCOPES) + "." in help_text


def test_keys_list_revoke_and_rotate(api_url: str) -> None:
    old = roadie("keys", "create", "--name", "mobile", "--scopes", "jobs:read").strip()
    roadie("keys", "create", "--name", "web", "--scopes", "jobs:read")

    new = roadie("keys", "rotate", "mobile").strip()
    assert "revoked web" in roadie("keys", "revoke", "web")
    listing = roadie("keys", "list")

    assert new.startswith("rk_live_")
    assert new != old
    mobile, web = (line for line in listing.splitlines() if line.startswith(("mobile", "web")))
    assert new[:12] in mobile
    assert "revoked" not in mobile
    assert "revoked" in web
    assert old not in listing
    assert new not in listing
    assert httpx.get(f"{api_url}/v1/jobs", headers={"Authorization": f"Bearer {new}"}).status_code == 200
    assert httpx.get(f"{api_url}/v1/jobs", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    again = CliRunner().invoke(main, ["keys", "revoke", "web"])
    assert (again.exit_code, again.output) == (1, "Error: no live key named 'web'\n")


def test_an_unreachable_database_is_one_line_without_the_password() -> None:
    closed_port = free_port()
    env = os.environ | {"ROADIE_DATABASE_URL": f"postgresql+psycopg://roadie:hunter2@127.0.0.1:{closed_port}/roadie"}

    result = subprocess.run(
        [sys.executable, "-m", "roadie.cli", "keys", "list"], env=env, capture_output=True, text=True, check=False
    )

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"Error: cannot reach the database at 127.0.0.1:{closed_port}: ")
    assert len(result.stderr.splitlines()) == 1
    assert "hunter2" not in result.stderr


@pytest.mark.usefixtures("worker")
def test_jobs_list_show_retry_and_cancel(client: httpx.Client) -> None:
    failed = wait_for_job(client, submit(client, {"fail": "permanent", "fail_times": 1})["id"], "failed")["id"]

    listing = roadie("jobs", "list", "--status", "failed")
    assert failed in listing
    assert '"code": "echo_permanent"' in roadie("jobs", "show", failed)

    unfiltered = CliRunner().invoke(main, ["jobs", "retry"])
    assert unfiltered.exit_code == 2
    assert "--all for every job" in unfiltered.output
    assert client.get(f"/v1/jobs/{failed}").json()["reruns"] == []
    assert "re-queued 1 job(s)" in roadie("jobs", "retry", "--error-code", "echo_permanent")
    assert wait_for_job(client, failed, "succeeded")["reruns"][0]["by"].startswith("cli:")

    slow = submit(client, {"sleep_ms": 600_000})["id"]  # runs until cancelled, however slow the machine
    assert slow not in roadie("jobs", "list", "--status", "failed")
    wait_for_job(client, slow, "running")
    roadie("jobs", "cancel", slow)
    assert wait_for_job(client, slow, "cancelled")["cancel_requested"]


def test_indexer_status_prints_only_its_answer_even_when_the_chain_is_down() -> None:
    env = os.environ | {"ROADIE_SOLANA_RPC_URL": f"http://127.0.0.1:{free_port()}"}

    result = subprocess.run(
        [sys.executable, "-m", "roadie.cli", "indexer", "status"], env=env, capture_output=True, text=True, check=False
    )

    assert result.returncode == 0
    assert result.stderr == ""
    answer = json.loads(result.stdout)
    assert answer["chain_slot"] is None
    assert answer["chain_error"].startswith("unreachable (1 RPC endpoint(s)): getSlot failed")
    assert "127.0.0.1" not in answer["chain_error"]
    assert answer["poison"] == 0
