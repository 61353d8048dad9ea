"""``roadie flower``: Flower on the real broker, watching a real worker, never without authentication."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from roadie.flower import FlowerConfigError, check_email_pattern, flower_launch
from roadie.processes import ProcessGroup, flower_command
from roadie.settings import Settings
from roadie.supervisor import process_commands
from tests.conftest import ROOT, Processes, free_port
from tests.helpers import submit, wait_for_job

CREDENTIALS = "ops:flower-test-pass,viewer:other:pass"
OPS = ("ops", "flower-test-pass")


@pytest.fixture(scope="module")
def flower_url(processes: Processes, worker: ProcessGroup) -> Iterator[str]:
    port = free_port()
    flower = processes.flower(port, CREDENTIALS)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert flower.popen is not None
        assert flower.popen.poll() is None, f"flower exited:\n{flower.log()}"
        with suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthcheck", timeout=1).status_code == 200:
                break
        time.sleep(0.2)
    else:
        raise RuntimeError(f"flower did not start:\n{flower.log()}")
    yield url
    flower.stop()
    assert "flower-test-pass" not in flower.log()
    assert "other:pass" not in flower.log()


def poll(fetch: Any, timeout: float = 20) -> Any:
    """Call fetch until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := fetch():
            return found
        time.sleep(0.25)
    raise AssertionError("not seen in time")


def test_flower_lists_the_running_worker_to_an_authenticated_user(flower_url: str, worker: ProcessGroup) -> None:
    def workers() -> dict[str, Any]:
        response = httpx.get(f"{flower_url}/api/workers", params={"refresh": "1"}, auth=OPS, timeout=10)
        assert response.status_code == 200, response.text
        return {name: info for name, info in response.json().items() if name.startswith(f"{worker.name}@")}

    (info,) = poll(workers).values()

    assert "platform.echo" in info["registered"]
    assert {q["name"] for q in info["active_queues"]} >= {"default", "media", "ledger"}


@pytest.mark.parametrize(
    "auth", [None, ("ops", "wrong"), ("nobody", "flower-test-pass")], ids=["none", "bad-password", "bad-user"]
)
def test_flower_refuses_requests_without_valid_credentials(flower_url: str, auth: tuple[str, str] | None) -> None:
    for path in ("/api/workers", "/api/tasks", "/api/task/info/x", "/tasks", "/"):
        response = httpx.get(f"{flower_url}{path}", auth=auth, timeout=10)

        assert response.status_code == 401, path
        assert "platform.echo" not in response.text
    assert httpx.get(f"{flower_url}/", auth=auth, timeout=10).headers["www-authenticate"] == 'Basic realm="flower"'


def test_the_second_basic_auth_user_whose_password_has_a_colon_is_let_in(flower_url: str) -> None:
    assert httpx.get(f"{flower_url}/api/tasks", auth=("viewer", "other:pass"), timeout=10).status_code == 200


def test_a_job_run_by_the_worker_appears_in_flower_s_task_list(
    flower_url: str, client: httpx.Client, worker: ProcessGroup
) -> None:
    job = wait_for_job(client, submit(client, {"seen_by": "flower"})["id"], "succeeded")

    def task() -> dict[str, Any] | None:
        response = httpx.get(f"{flower_url}/api/tasks", params={"taskname": "platform.echo"}, auth=OPS, timeout=10)
        assert response.status_code == 200
        return next(
            (t for task_id, t in response.json().items() if task_id.startswith(job["id"]) and t["state"] == "SUCCESS"),
            None,
        )

    seen = poll(task)

    assert seen["name"] == "platform.echo"
    assert seen["worker"].startswith(f"{worker.name}@")
    assert job["id"] in seen["args"]


def dashboard_counters(flower_url: str, worker: ProcessGroup) -> Counter[str]:
    """The counts on Flower's workers dashboard (Processed, Failed, Succeeded, Retried) for the test's worker."""
    response = httpx.get(f"{flower_url}/workers", params={"json": "1"}, auth=OPS, timeout=10)
    assert response.status_code == 200, response.text
    rows = [row for row in response.json()["data"] if row["hostname"].startswith(f"{worker.name}@")]
    return Counter({kind: row.get(f"task-{kind}", 0) for row in rows for kind in ("succeeded", "failed", "retried")})


def test_flower_shows_each_jobs_ledger_outcome_failed_retried_and_cancelled_ones_included(
    flower_url: str, client: httpx.Client, worker: ProcessGroup
) -> None:
    counted_before = dashboard_counters(flower_url, worker)
    succeeded = submit(client, {"outcome": "succeeds"})["id"]
    failed = submit(client, {"fail": "permanent"})["id"]
    retried_then_succeeded = submit(client, {"fail": "transient", "fail_times": 1})["id"]
    cancelled = submit(client, {"sleep_ms": 60_000})["id"]
    wait_for_job(client, cancelled, "running")
    assert client.post(f"/v1/jobs/{cancelled}/cancel").status_code == 202
    for job_id, status in [(succeeded, "succeeded"), (failed, "failed"), (retried_then_succeeded, "succeeded"),
                           (cancelled, "cancelled")]:  # fmt: skip
        wait_for_job(client, job_id, status)

    def tasks_of(job_id: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{flower_url}/api/tasks", params={"taskname": "platform.echo"}, auth=OPS, timeout=10)
        assert response.status_code == 200
        return sorted(
            (t for task_id, t in response.json().items() if task_id.startswith(job_id)),
            key=lambda t: t.get("received") or 0,
        )

    def states_of(job_id: str, count: int) -> list[str] | None:
        states = [t["state"] for t in tasks_of(job_id)]
        return states if len(states) == count and "STARTED" not in states and "RECEIVED" not in states else None

    assert poll(lambda: states_of(succeeded, 1)) == ["SUCCESS"]
    assert poll(lambda: states_of(failed, 1)) == ["FAILURE"]
    assert poll(lambda: states_of(retried_then_succeeded, 2)) == ["RETRY", "SUCCESS"]
    assert poll(lambda: states_of(cancelled, 1)) == ["FAILURE"]
    (failure,) = tasks_of(failed)
    assert failure["exception"] == "JobFailedError('echo_permanent: rehearsed permanent failure on attempt 1')"
    (cancellation,) = tasks_of(cancelled)
    assert cancellation["exception"].startswith("JobCancelledError('cancelled: ")
    # The dashboard's counters for the same period agree with the ledger: a cancelled job counts as a failure.
    jobs = (succeeded, failed, retried_then_succeeded, cancelled)
    ledger = [client.get(f"/v1/jobs/{job_id}").json() for job_id in jobs]
    expected = Counter(
        succeeded=sum(job["status"] == "succeeded" for job in ledger),
        failed=sum(job["status"] in ("failed", "cancelled") for job in ledger),
        retried=sum(job["attempts"] - 1 for job in ledger),
    )
    assert dashboard_counters(flower_url, worker) - counted_before == expected


def test_the_worker_sends_the_task_events_of_jobs_run_together_in_a_few_messages(
    client: httpx.Client, worker: ProcessGroup
) -> None:
    from celery.events.receiver import EventReceiver

    from workers.app import app

    messages: list[list[dict[str, Any]]] = []  # task events arrive as lists (task.multi), one list per message

    class Counting(EventReceiver):  # type: ignore[misc]  # Celery's classes are untyped
        def _receive(self, body: Any, message: Any, **kwargs: Any) -> None:
            if isinstance(body, list):
                messages.append(body)
            super()._receive(body, message, **kwargs)

    def ours(event: dict[str, Any], job_ids: list[str]) -> bool:
        return str(event.get("uuid", "")).split(".")[0] in job_ids  # task ids are "<job id>.<outbox id>"

    def events_of(job_ids: list[str]) -> list[dict[str, Any]]:
        return [event for batch in list(messages) for event in batch if ours(event, job_ids)]

    with app.connection_for_read() as connection:
        receiver = Counting(connection, handlers={}, app=app)
        listening = threading.Thread(target=receiver.capture, kwargs={"limit": None, "wakeup": False}, daemon=True)
        listening.start()
        try:
            warm_up = submit(client, {"warm": "up"})["id"]
            poll(lambda: len(events_of([warm_up])) >= 3)
            jobs = [submit(client, {"n": n})["id"] for n in range(10)]
            for job_id in jobs:
                wait_for_job(client, job_id, "succeeded")
            poll(lambda: len(events_of(jobs)) >= 3 * len(jobs))
        finally:
            receiver.should_stop = True
            listening.join(timeout=5)

    kinds = sorted(event["type"] for event in events_of(jobs))
    assert kinds == sorted(["task-received", "task-started", "task-succeeded"] * len(jobs))
    carrying = [batch for batch in messages if any(ours(event, jobs) for event in batch)]
    assert len(carrying) < len(jobs)  # Celery on its own publishes about one message per event


def test_roadie_flower_without_authentication_exits_non_zero_and_says_why(database: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROADIE_FLOWER_", "FLOWER_"))}
    env["ROADIE_FLOWER_PORT"] = str(free_port())

    done = subprocess.run(
        flower_command(),
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode != 0
    assert "refusing to start Flower without authentication" in done.stderr
    assert "ROADIE_FLOWER_BASIC_AUTH" in done.stderr


def test_malformed_credentials_are_refused_without_echoing_them() -> None:
    with pytest.raises(FlowerConfigError, match="entry 2 of 2 is not user:password") as refused:
        flower_launch(Settings(flower_basic_auth=SecretStr("ops:secret-one,secret-two")))

    assert "secret" not in str(refused.value).replace("ROADIE_FLOWER_BASIC_AUTH", "")


def test_credentials_reach_flower_through_its_environment_not_its_command_line() -> None:
    launch = flower_launch(
        Settings(flower_basic_auth=SecretStr("ops:pw1"), flower_port=5999),
        ["--persistent=True"],
        environ={"FLOWER_UNAUTHENTICATED_API": "true", "FLOWER_BASIC_AUTH": "x:y", "PATH": "/bin"},
    )

    assert launch.env == {"FLOWER_BASIC_AUTH": "ops:pw1", "PATH": "/bin"}
    assert not any("pw1" in part for part in launch.command)
    assert launch.command[-5:] == [
        "flower",
        "--address=127.0.0.1",
        "--port=5999",
        f"--conf={os.devnull}",
        "--persistent=True",
    ]
    with pytest.raises(FlowerConfigError, match="--basic_auth is set from the ROADIE_FLOWER_"):
        flower_launch(Settings(flower_basic_auth=SecretStr("ops:pw1")), ["--basic_auth=other:pw"])


def test_oauth_needs_its_client_settings_and_passes_them_as_flower_variables() -> None:
    with pytest.raises(FlowerConfigError, match="ROADIE_FLOWER_AUTH_PROVIDER, ROADIE_FLOWER_OAUTH2_KEY"):
        flower_launch(Settings(flower_auth=".*@example.com"))

    launch = flower_launch(
        Settings(
            flower_auth=".*@example.com",
            flower_auth_provider="flower.views.auth.GithubLoginHandler",
            flower_oauth2_key="client-id",
            flower_oauth2_secret=SecretStr("client-secret"),
            flower_oauth2_redirect_uri="https://flower.example.com/login",
        ),
        environ={},
    )

    assert launch.env == {
        "FLOWER_AUTH": ".*@example.com",
        "FLOWER_AUTH_PROVIDER": "flower.views.auth.GithubLoginHandler",
        "FLOWER_OAUTH2_KEY": "client-id",
        "FLOWER_OAUTH2_SECRET": "client-secret",
        "FLOWER_OAUTH2_REDIRECT_URI": "https://flower.example.com/login",
    }


@pytest.mark.parametrize(
    "pattern", [".*@example.com", "ops.*@example.com", "alice@example.com|bob+flower@example.co.uk", "a@b.example"]
)
def test_email_patterns_flower_matches_whole_are_accepted(pattern: str) -> None:
    check_email_pattern(pattern)


@pytest.mark.parametrize(
    "pattern",
    [
        ".*@example.com$",  # Flower 1 advice: Flower 2 would take the $ literally
        r"^.*@example\.com",
        ".*",
        ".*@.*",  # anyone at any domain
        ".*@example.*",
        "*@example.com",
        ".*@example.com|boss@example.com",
        "example.com",
        "alice@example.com|",
    ],
)
def test_unsafe_or_regex_style_email_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(FlowerConfigError):
        check_email_pattern(pattern)


def test_roadie_up_runs_flower_only_when_authentication_is_configured() -> None:
    assert "flower" not in process_commands(Settings())
    assert "flower" not in process_commands(Settings(flower_basic_auth=SecretStr("  ")))
    assert process_commands(Settings(flower_basic_auth=SecretStr("ops:pw")))["flower"][-2:] == ["roadie.cli", "flower"]
    assert "flower" in process_commands(Settings(flower_auth="ops@example.com"))
