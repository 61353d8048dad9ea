"""``roadie up`` and the embedded servers that ``make demo`` runs on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
import redis

from roadie.embedded import EmbeddedPostgres, EmbeddedRedis
from tests.conftest import ROOT, free_port


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
