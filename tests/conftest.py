"""One fixture set for the real parts: Postgres, Redis, the API, the relay and Celery workers.

The session gets a fresh database migrated by Alembic and its own Redis database; every
test starts from empty tables and an empty broker. The API, the relay and the workers run
as real subprocesses, so tests exercise the same processes production runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from sqlalchemy.exc import OperationalError

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("ROADIE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
# Each session its own Redis database, so two sessions on one machine do not flush each other.
REDIS_URL = os.environ.get("ROADIE_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{1 + os.getpid() % 15}")
TEST_DATABASE = f"roadie_test_{os.getpid()}"

# Settings for this process and every subprocess: fast beats and retries so failures show in seconds.
os.environ.update(
    {
        "ROADIE_DATABASE_URL": PG_ADMIN.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0]
        + f"/{TEST_DATABASE}",
        "ROADIE_BROKER_URL": os.environ.get("ROADIE_TEST_BROKER_URL", REDIS_URL),
        "ROADIE_HEARTBEAT_INTERVAL_S": "0.5",
        "ROADIE_HEARTBEAT_TIMEOUT_S": "3",
        "ROADIE_REPUBLISH_AFTER_S": "1",
        "ROADIE_RETRY_BACKOFF_BASE_S": "0.2",
        "ROADIE_RETRY_BACKOFF_MAX_S": "1",
        "ROADIE_MAX_DELIVERIES": "3",
        "ROADIE_RELAY_POLL_INTERVAL_S": "0.2",
    }
)

from roadie.db import async_engine, dispose_engines, sync_engine  # noqa: E402 - after the environment


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    """A fresh database migrated to head, dropped after the session."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{TEST_DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{TEST_DATABASE}"')
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], check=True, cwd=ROOT)
    yield os.environ["ROADIE_DATABASE_URL"]
    dispose_engines()
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{TEST_DATABASE}" WITH (FORCE)')


@pytest.fixture(scope="session")
def broker() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


@pytest.fixture(autouse=True)
def empty_state(database: str, broker: redis.Redis) -> None:
    """Every test starts with empty tables and an empty broker database."""
    tables = ", ".join(
        f'"{t}"' for t in ("outbox", "idempotency_keys", "job_events", "job_attempts", "jobs", "api_clients")
    )
    for attempt in range(10):  # a straggling job of the previous test may hold row locks: retry
        try:
            with sync_engine().begin() as connection:
                connection.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
                connection.exec_driver_sql(f"TRUNCATE {tables} CASCADE")
            break
        except OperationalError:
            if attempt == 9:
                raise
            time.sleep(0.2)
    if os.environ["ROADIE_BROKER_URL"].startswith("redis"):
        broker.flushdb()


@dataclass
class Process:
    """A platform process run as a subprocess in its own process group."""

    name: str
    command: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        log_file = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a Celery worker and its pool children)."""
        if self.popen is not None and self.popen.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            self.popen.wait(timeout=30)
        self.popen = None

    def stop(self) -> None:
        if self.popen is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
        self.popen = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Processes:
    log_dir: Path
    running: list[Process] = field(default_factory=list)

    def worker(self, *, queues: str = "default,media,ipfs,chain,ledger,indexer", concurrency: int = 1) -> Process:
        name = f"worker-{uuid.uuid4().hex[:6]}"
        command = [
            sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", queues, "-n", f"{name}@%h",
            "--concurrency", str(concurrency), "--prefetch-multiplier", "1", "--without-gossip",
            "--without-mingle", "--without-heartbeat", "--loglevel", "INFO",
        ]  # fmt: skip
        return self._start(name, command)

    def relay(self) -> Process:
        return self._start("relay", [sys.executable, "-m", "roadie.cli", "relay"])

    def api(self, port: int) -> Process:
        command = [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port", str(port)]
        return self._start("api", command)

    def _start(self, name: str, command: list[str]) -> Process:
        process = Process(name, command, self.log_dir / f"{name}.log").start()
        self.running.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.running:
            process.stop()


@pytest.fixture(scope="session")
def processes(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    procs = Processes(tmp_path_factory.mktemp("logs"))
    yield procs
    procs.stop_all()


@pytest.fixture(scope="session")
def api_url(processes: Processes) -> str:
    """The intake API, served by uvicorn, with the outbox relay running beside it."""
    port = free_port()
    api = processes.api(port)
    processes.relay()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return url
        time.sleep(0.1)
    raise RuntimeError(f"API did not start:\n{api.log()}")


@pytest.fixture(scope="session")
def worker(processes: Processes) -> Iterator[Process]:
    """A Celery worker consuming every queue; tests that kill workers stop it and start their own."""
    process = processes.worker(concurrency=2)
    yield process
    process.stop()


def create_key(name: str, scopes: list[str]) -> str:
    from roadie.auth import create_client
    from roadie.db import async_transaction

    async def work() -> str:
        try:
            async with async_transaction() as session:
                _, raw_key = await create_client(session, name, scopes)
                return raw_key
        finally:
            await async_engine().dispose()

    return asyncio.run(work())


@pytest.fixture
def make_client(api_url: str) -> Iterator[Callable[..., httpx.Client]]:
    """An HTTP client for the API holding a fresh key with the given scopes."""
    clients: list[httpx.Client] = []

    def make(*scopes: str, name: str | None = None) -> httpx.Client:
        key = create_key(name or f"client-{uuid.uuid4().hex[:8]}", list(scopes))
        client = httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=15)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., httpx.Client]) -> httpx.Client:
    """An upstream app: may submit and read its jobs."""
    return make_client("jobs:write", "jobs:read")


@pytest.fixture
def admin(make_client: Callable[..., httpx.Client]) -> httpx.Client:
    return make_client("admin", name=f"ops-{uuid.uuid4().hex[:6]}")
