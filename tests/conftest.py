"""One fixture set for the real parts: Postgres, Redis, the API, the relay and Celery workers.

The session gets a fresh database migrated by Alembic and its own Redis database (on
RabbitMQ, with ROADIE_TEST_BROKER_URL=amqp://..., its own vhost); every test starts from empty
tables and an empty broker. The API, the relay and the workers run
as real subprocesses, so tests exercise the same processes production runs.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import redis
from cryptography.fernet import Fernet
from sqlalchemy.exc import OperationalError

from roadie.processes import POOLS, Pool, ProcessGroup, api_command, flower_command, migrate_command, relay_command

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = [
    "tests.fixtures.ipfs",
    "tests.fixtures.media",
    "tests.fixtures.chain",
    "tests.fixtures.ledger",
    "tests.fixtures.webhooks",
]

PG_ADMIN = os.environ.get("ROADIE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _reserve_redis_database(server: str = "redis://127.0.0.1:6379") -> str:
    """A Redis database of this session's own, so concurrent sessions never flush each other's.

    Reserved with SET NX on database 0; a session killed without cleanup frees it after an hour.
    """
    control = redis.Redis.from_url(f"{server}/0")
    for number in range(1, 16):
        if control.set(f"roadie:test-session:db{number}", os.getpid(), nx=True, ex=3600):
            atexit.register(control.delete, f"roadie:test-session:db{number}")
            return f"{server}/{number}"
    raise RuntimeError("all Redis databases 1-15 are reserved by other test sessions")


REDIS_URL = os.environ.get("ROADIE_TEST_REDIS_URL") or _reserve_redis_database()
TEST_DATABASE = f"roadie_test_{os.getpid()}"


def _session_broker_url(url: str) -> tuple[str, str | None]:
    """On RabbitMQ's default vhost, a vhost of this session's own (made with rabbitmqctl when it is here).

    Like the Redis database per session: two sessions on one broker do not take each other's messages.
    """
    parts = urlsplit(url)
    if not parts.scheme.startswith(("amqp", "pyamqp")) or parts.path not in ("", "/", "//"):
        return url, None
    if shutil.which("rabbitmqctl") is None:
        return url, None  # a remote broker: the session purges the platform queues before each test
    vhost = f"roadie_test_{os.getpid()}"
    return f"{parts.scheme}://{parts.netloc}/{vhost}", vhost


BROKER_URL, AMQP_VHOST = _session_broker_url(os.environ.get("ROADIE_TEST_BROKER_URL", REDIS_URL))
ON_REDIS = BROKER_URL.startswith(("redis://", "rediss://"))

# Settings for this process and every subprocess: fast beats and retries so failures show in seconds.
os.environ.update(
    {
        "ROADIE_DATABASE_URL": PG_ADMIN.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0]
        + f"/{TEST_DATABASE}",
        "ROADIE_BROKER_URL": BROKER_URL,
        "ROADIE_HEARTBEAT_INTERVAL_S": "0.5",
        "ROADIE_HEARTBEAT_TIMEOUT_S": "3",
        "ROADIE_REPUBLISH_AFTER_S": "1",
        "ROADIE_RETRY_BACKOFF_BASE_S": "0.2",
        "ROADIE_RETRY_BACKOFF_MAX_S": "1",
        "ROADIE_MAX_DELIVERIES": "3",
        "ROADIE_RELAY_POLL_INTERVAL_S": "0.2",
        "ROADIE_WORKER_METRICS_PORT": "0",  # tests that scrape a worker give it a free port
        # The tests' webhook receivers listen on loopback; retries come in seconds, not hours.
        "ROADIE_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
        "ROADIE_WEBHOOK_RETRY_SCHEDULE_S": "[0.3, 0.6, 1, 2, 3]",
        "ROADIE_WEBHOOK_TIMEOUT_S": "2",
        "ROADIE_WEBHOOK_SECRET_KEYS": Fernet.generate_key().decode(),
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
    subprocess.run(migrate_command(), check=True, cwd=ROOT)
    yield os.environ["ROADIE_DATABASE_URL"]
    dispose_engines()
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{TEST_DATABASE}" WITH (FORCE)')


@pytest.fixture(scope="session")
def broker() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


def _rabbitmqctl(*args: str) -> None:
    done = subprocess.run(["rabbitmqctl", "-q", *args], check=False, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")


@pytest.fixture(scope="session")
def broker_vhost() -> Iterator[str | None]:
    """The session's RabbitMQ vhost, created before any process connects and deleted afterwards."""
    if AMQP_VHOST is None:
        yield None
        return
    user = urlsplit(BROKER_URL).username or "guest"
    _rabbitmqctl("add_vhost", AMQP_VHOST)
    _rabbitmqctl("set_permissions", "-p", AMQP_VHOST, user, ".*", ".*", ".*")
    yield AMQP_VHOST
    with suppress(RuntimeError, subprocess.TimeoutExpired):
        _rabbitmqctl("delete_vhost", AMQP_VHOST)


def purge_amqp_queues() -> None:
    """Empty the platform's queues, declared as the workers declare them (RabbitMQ has no FLUSHDB)."""
    from roadie.jobs.types import QUEUES
    from workers.app import app

    with app.connection_for_write() as connection:
        for name in QUEUES:
            queue = app.amqp.queues[name](connection.default_channel)
            queue.declare()
            queue.purge()


@pytest.fixture(autouse=True)
def empty_state(database: str, broker: redis.Redis, broker_vhost: str | None) -> None:
    """Every test starts with empty tables and an empty broker database."""
    from models import Base

    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
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
    if ON_REDIS:
        broker.flushdb()
    else:
        purge_amqp_queues()


@dataclass
class Processes:
    log_dir: Path
    running: list[ProcessGroup] = field(default_factory=list)

    def worker(
        self,
        *,
        queues: str = ",".join(POOLS),
        concurrency: int = 1,
        env: dict[str, str] | None = None,
    ) -> ProcessGroup:
        """A Celery worker; ``env`` adds to (or overrides) this process's environment."""
        name = f"worker-{uuid.uuid4().hex[:6]}"
        command = [*Pool(queues, concurrency).command(node=f"{name}@%h"), "--without-heartbeat"]
        return self._start(name, command, os.environ | env if env else None)

    def relay(self) -> ProcessGroup:
        return self._start("relay", relay_command())

    def api(self, port: int, env: dict[str, str] | None = None) -> ProcessGroup:
        """``roadie api`` on 127.0.0.1:port as production starts it, plus uvicorn's access log (checked for secrets)."""
        return self._start("api", api_command("127.0.0.1", port, access_log=True), env)

    def flower(self, port: int, basic_auth: str | None) -> ProcessGroup:
        """``roadie flower`` on 127.0.0.1:port; basic_auth None runs it with no credentials configured."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROADIE_FLOWER_")}
        env |= {"ROADIE_FLOWER_ADDRESS": "127.0.0.1", "ROADIE_FLOWER_PORT": str(port)}
        if basic_auth is not None:
            env["ROADIE_FLOWER_BASIC_AUTH"] = basic_auth
        return self._start("flower", flower_command(), env)

    def _start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> ProcessGroup:
        process = ProcessGroup(name, command, self.log_dir / f"{name}.log", env=env, cwd=ROOT).start()
        self.running.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.running:
            process.stop()


@pytest.fixture(scope="session")
def processes(database: str, broker_vhost: str | None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
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
def worker(processes: Processes) -> Iterator[ProcessGroup]:
    """A Celery worker consuming every queue; tests that kill workers stop it and start their own."""
    process = processes.worker(concurrency=2)
    yield process
    process.stop()


@pytest.fixture
def own_workers(worker: ProcessGroup, processes: Processes) -> Iterator[Processes]:
    """The shared worker is stopped for the test (which starts and kills its own) and started again afterwards."""
    worker.stop()
    yield processes
    for process in processes.running:
        if process is not worker and process.name.startswith("worker-") and process.alive:
            process.kill()
    worker.start()


@pytest.fixture(scope="module")
def without_relay_or_workers(processes: Processes) -> Iterator[None]:
    """For tests that drive the runtime by hand: no relay publishes their outbox rows, no worker runs them."""
    paused = [p for p in processes.running if p.alive and (p.name == "relay" or p.name.startswith("worker-"))]
    for process in paused:
        process.stop()
    yield
    for process in paused:
        process.start()


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
    """An upstream app: may submit and read its jobs, and rehearse failures with platform.echo."""
    return make_client("jobs:write", "jobs:read", "jobs:rehearse")


@pytest.fixture
def admin(make_client: Callable[..., httpx.Client]) -> httpx.Client:
    return make_client("admin", name=f"ops-{uuid.uuid4().hex[:6]}")
