"""Every database connection has a connect timeout and keepalives, and each process role its statement timeout.

A cut-off or frozen peer is noticed in seconds, not after TCP gives up, and no statement of a
worker can run on long after the worker stopped waiting for it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from roadie import db
from roadie.db import transaction, use_role
from roadie.retrying import is_transient
from roadie.settings import get_settings
from tests.conftest import Processes, create_key, free_port
from tests.helpers import submit, wait_for_job


@pytest.fixture
def role(database: str) -> Iterator[None]:
    """The test switches this process's role; it is a plain command again afterwards."""
    yield
    use_role("cli")
    get_settings.cache_clear()


def _show(*names: str) -> dict[str, str]:
    with transaction() as session:
        return {name: session.execute(text(f"SHOW {name}")).scalar_one() for name in names}


@pytest.mark.usefixtures("role")
@pytest.mark.parametrize(
    ("process", "statement_timeout"), [("api", "15s"), ("worker", "5min"), ("relay", "30s"), ("beat", "1min")]
)
def test_each_role_s_connections_carry_its_statement_timeout_and_keepalives(
    process: db.Role, statement_timeout: str
) -> None:
    use_role(process)

    assert _show(
        "statement_timeout",
        "idle_in_transaction_session_timeout",
        "tcp_keepalives_idle",
        "tcp_keepalives_interval",
        "tcp_keepalives_count",
        "tcp_user_timeout",
        "client_connection_check_interval",
        "application_name",
    ) == {
        "statement_timeout": statement_timeout,
        "idle_in_transaction_session_timeout": statement_timeout,
        "tcp_keepalives_idle": "10",
        "tcp_keepalives_interval": "5",
        "tcp_keepalives_count": "3",
        "tcp_user_timeout": "25000",
        "client_connection_check_interval": "5s",
        "application_name": f"roadie-{process}",
    }
    assert db.connect_args()["connect_timeout"] == 5


@pytest.mark.usefixtures("role")
def test_a_statement_past_the_worker_s_timeout_is_cancelled_and_the_job_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROADIE_DB_STATEMENT_TIMEOUT_WORKER_S", "0.3")
    get_settings.cache_clear()
    use_role("worker")

    with pytest.raises(OperationalError, match="statement timeout") as raised, transaction() as session:
        session.execute(text("SELECT pg_sleep(5)"))

    assert is_transient(raised.value)


@pytest.mark.usefixtures("worker")
@pytest.mark.usefixtures("worker")
def test_the_running_api_relay_and_worker_connect_in_their_roles(client: httpx.Client) -> None:
    wait_for_job(client, submit(client, {"n": 1})["id"], "succeeded")

    with transaction() as session:
        names = set(
            session.execute(
                text("SELECT application_name FROM pg_stat_activity WHERE datname = current_database()")
            ).scalars()
        )

    assert {"roadie-api", "roadie-relay", "roadie-worker"} <= names


def test_an_api_request_the_database_cannot_answer_in_time_is_503_with_retry_after_not_500(
    processes: Processes, database: str
) -> None:
    port = free_port()
    api = processes.api(port, os.environ | {"ROADIE_DB_STATEMENT_TIMEOUT_API_S": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not _ready(url):
        assert time.monotonic() < deadline, api.log()
        time.sleep(0.2)
    key = create_key(f"client-{uuid.uuid4().hex[:8]}", ["jobs:write", "jobs:rehearse"])
    try:
        with db.sync_engine().connect() as blocker, blocker.begin() as locked:
            blocker.execute(text("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE"))  # as a long migration would
            answer = httpx.post(
                f"{url}/v1/jobs",
                json={"type": "platform.echo", "payload": {}},
                headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "while-locked"},
                timeout=30,
            )
            locked.rollback()
        retried = httpx.post(
            f"{url}/v1/jobs",
            json={"type": "platform.echo", "payload": {}},
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "while-locked"},
            timeout=30,
        )
    finally:
        api.stop()

    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "1"
    assert answer.json()["error"]["code"] == "unavailable"
    assert retried.status_code == 202
    assert [line for line in api.log().splitlines() if "Traceback" in line] == []


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
