"""``roadie up`` and the embedded servers that ``make demo`` runs on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
import redis
from sqlalchemy import func, select

from models.platform import JobAttempt
from roadie.db import transaction
from roadie.embedded import EmbeddedPostgres, EmbeddedRedis
from roadie.supervisor import RestartPolicy
from tests.conftest import ROOT, create_key, free_port
from tests.helpers import submit, wait_for_job


def test_roadie_up_serves_the_api_and_stops_every_process_on_sigterm(database: str, tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, ROADIE_API_PORT=str(port), ROADIE_HOME=str(tmp_path))
    up = subprocess.Popen(
        [sys.executable, "-m", "roadie.cli", "up"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert up.stdout is not None
        banner = ""
        while "Roadie is up" not in banner:
            line = up.stdout.readline()
            assert line, f"roadie up exited early with {up.wait()}"
            banner += line
        assert f"http://127.0.0.1:{port}" in banner
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) >= 9  # api, relay, beat and six pools

        up.send_signal(signal.SIGTERM)

        assert up.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == []
    finally:
        if up.poll() is None:
            up.kill()


#: How to tell ``roadie up``'s children apart by their command line.
KINDS = {
    "api": ["roadie.cli", "api"],
    "relay": ["roadie.cli", "relay"],
    "beat": ["beat"],
    "worker-default": ["worker", "default"],
    "flower": ["flower"],  # `roadie flower` execs Celery's flower command
}


def started_platform(tmp_path: Path) -> tuple[subprocess.Popen[str], list[str], str]:
    """``roadie up`` without the embedded chain and IPFS node, with Flower; its output lines, as they come."""
    port = free_port()
    env = dict(
        os.environ,
        ROADIE_API_PORT=str(port),
        ROADIE_HOME=str(tmp_path),
        ROADIE_SOLANA_RPC_URL=f"http://127.0.0.1:{free_port()}",
        ROADIE_IPFS_API_ADDR=f"/ip4/127.0.0.1/tcp/{free_port()}/http",
        ROADIE_FLOWER_BASIC_AUTH="ops:a-long-flower-password",
        ROADIE_FLOWER_PORT=str(free_port()),
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "roadie.cli", "up"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(up.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    deadline = time.monotonic() + 180
    while not any("Roadie is up" in line for line in lines):
        assert up.poll() is None, f"roadie up exited: {lines}"
        assert time.monotonic() < deadline, f"roadie up did not start: {lines}"
        time.sleep(0.2)
    return up, lines, f"http://127.0.0.1:{port}"


def ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def leader_pids(up: subprocess.Popen[str]) -> dict[str, int]:
    found = {}
    for child in psutil.Process(up.pid).children():
        for kind, words in KINDS.items():
            if all(word in child.cmdline() for word in words):
                found[kind] = child.pid
    return found


def test_roadie_up_restarts_each_kind_of_process_killed_under_load_and_no_job_is_lost_or_run_twice(
    database: str, tmp_path: Path
) -> None:
    up, lines, base_url = started_platform(tmp_path)
    try:
        key = create_key("supervised", ["jobs:write", "jobs:read", "jobs:rehearse"])
        client = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=15)
        jobs = [submit(client, {"sleep_ms": 300, "n": n})["id"] for n in range(40)]
        wait_for_job(client, jobs[0], {"running", "succeeded"}, timeout=60)
        leaders = leader_pids(up)
        assert set(leaders) == set(KINDS), leaders

        for pid in leaders.values():  # each main process, as an OOM killer would
            os.kill(pid, signal.SIGKILL)

        deadline = time.monotonic() + 180
        while not all(any(line.startswith(f"{kind} restarted") for line in lines) for kind in KINDS):
            assert up.poll() is None, lines
            assert time.monotonic() < deadline, lines
            time.sleep(0.2)
        for kind in KINDS:
            assert any(line.startswith(f"{kind} killed by SIGKILL; restarting it in 1 s") for line in lines), lines
        while not ready(base_url):  # the restarted API is still importing
            assert time.monotonic() < deadline, lines
            time.sleep(0.2)
        wait_for_job(client, submit(client, {"n": "after"})["id"], "succeeded", timeout=120)
        for job_id in jobs:
            assert wait_for_job(client, job_id, "succeeded", timeout=120)["result"]["sleep_ms"] == 300
        with transaction() as session:
            succeeded = select(func.count()).where(JobAttempt.outcome == "succeeded", JobAttempt.job_id.in_(jobs))
            assert session.scalar(succeeded) == len(jobs)  # each ran to its end exactly once
        assert up.poll() is None

        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
    finally:
        if up.poll() is None:
            up.kill()


def test_the_restart_delay_doubles_with_each_recent_death_up_to_its_ceiling() -> None:
    policy = RestartPolicy()
    assert [policy.delay(deaths) for deaths in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


@pytest.fixture
def scratch_home() -> Iterator[Path]:
    """Outside pytest's tmp tree, whose root pytest keeps at mode 0700 (Postgres runs as nobody under root)."""
    with tempfile.TemporaryDirectory(prefix="roadie-embedded-") as home:
        Path(home).chmod(0o755)
        yield Path(home)


def test_the_embedded_postgres_and_redis_are_real_servers_that_keep_their_data(scratch_home: Path) -> None:
    postgres = EmbeddedPostgres(scratch_home / "pg", free_port())
    broker = EmbeddedRedis(scratch_home / "redis", free_port())
    try:
        url = postgres.start().replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("CREATE TABLE kept (n int)")
            connection.execute("INSERT INTO kept VALUES (42)")
            assert connection.execute("SHOW server_version").fetchone()[0].startswith("16")  # type: ignore[index]
        redis.Redis.from_url(broker.start()).set("kept", "yes")

        postgres.stop()
        broker.stop()
        assert not postgres.running()
        assert not broker.running()
        time.sleep(0.2)

        with psycopg.connect(postgres.start().replace("+psycopg", ""), autocommit=True) as connection:
            assert connection.execute("SELECT n FROM kept").fetchone() == (42,)
        assert redis.Redis.from_url(broker.start()).get("kept") == b"yes"
    finally:
        postgres.stop()
        broker.stop()
