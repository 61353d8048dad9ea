"""Shared set-up of the benchmarks: a scratch database and broker, subprocesses, stats and tables.

Call :func:`configure_environment` before importing anything that reads Roadie's settings; every
subprocess started here inherits the same ``ROADIE_*`` environment.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
import psycopg
import redis

from roadie.processes import POOLS, ProcessGroup, migrate_command, relay_command

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("ROADIE_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _reserve_redis_database(server: str = "redis://127.0.0.1:6379") -> str:
    """A Redis database no test session or other benchmark uses meanwhile (the tests' reservation scheme).

    Reserved with SET NX on database 0, from 15 down (test sessions take theirs from 1 up).
    """
    control = redis.Redis.from_url(f"{server}/0")
    for number in range(15, 0, -1):
        if control.set(f"roadie:test-session:db{number}", f"bench {os.getpid()}", nx=True, ex=3600):
            atexit.register(control.delete, f"roadie:test-session:db{number}")
            return f"{server}/{number}"
    raise RuntimeError("all Redis databases 1-15 are reserved by test sessions or benchmarks")


#: Per run, so two benchmarks (or a benchmark and a test session) never share a database.
BENCH_DATABASE = f"roadie_bench_{os.getpid()}"
REDIS_URL = os.environ.get("ROADIE_BENCH_REDIS_URL") or _reserve_redis_database()
DATABASE_URL = PG_ADMIN.replace("postgresql://", "postgresql+psycopg://", 1).rsplit("/", 1)[0] + f"/{BENCH_DATABASE}"


def configure_environment() -> None:
    """Point this process and its subprocesses at the scratch database and broker database."""
    os.environ.update(
        {
            "ROADIE_DATABASE_URL": DATABASE_URL,
            "ROADIE_BROKER_URL": REDIS_URL,
            "PYTHONUNBUFFERED": "1",
        }
    )
    from roadie.settings import get_settings

    get_settings.cache_clear()


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


# --- servers -------------------------------------------------------------------------------------


@contextmanager
def scratch_database() -> Iterator[str]:
    """``roadie_bench``, dropped and created, migrated to head; dropped again afterwards."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')
    try:
        subprocess.run(migrate_command(), check=True, cwd=ROOT)
        yield DATABASE_URL
    finally:
        from roadie.db import dispose_engines

        dispose_engines()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')


def broker() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


def flush_broker() -> None:
    with broker() as client:
        client.flushdb()


@contextmanager
def database_connection() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A plain autocommit connection to the scratch database, e.g. to poll counts cheaply."""
    url = DATABASE_URL.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as connection:
        yield connection


def sql_count(connection: psycopg.Connection[tuple[object, ...]], query: str) -> int:
    row = connection.execute(query).fetchone()
    assert row is not None
    return int(str(row[0]))


def sql_scalar(query: str) -> int:
    """One integer from the scratch database, on a short-lived connection of its own."""
    with database_connection() as connection:
        return sql_count(connection, query)


def wait_port(port: int, process: Process, timeout: float = 30.0) -> None:
    """Until something accepts TCP connections on 127.0.0.1:port (uvicorn binds after start-up)."""

    def listening() -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, timeout=timeout, what=f"port {port}", process=process, every=0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_api_key(scopes: Sequence[str] = ("jobs:write", "jobs:read", "jobs:rehearse")) -> str:
    """A fresh API key, created the way ``roadie keys create`` does."""
    from roadie.auth import create_client
    from roadie.db import async_engine, async_transaction

    async def work() -> str:
        try:
            async with async_transaction() as session:
                _, raw_key = await create_client(session, "bench", list(scopes))
                return raw_key
        finally:
            await async_engine().dispose()

    return asyncio.run(work())


# --- subprocesses --------------------------------------------------------------------------------


class Process(ProcessGroup):
    """A platform or baseline process of a run, whose CPU time the benchmarks report."""

    def cpu_seconds(self) -> float:
        """User + system CPU so far of the process, its live children and the children it reaped
        (a Celery worker's pool processes, recycled ones included; Linux /proc)."""
        if not self.alive:
            return 0.0
        leader = psutil.Process(self.pid)
        with leader.oneshot():
            times = leader.cpu_times()
            total = times.user + times.system + times.children_user + times.children_system
        for child in leader.children(recursive=True):
            with suppress(psutil.NoSuchProcess):
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
        return total


def server_cpu_seconds(name: str, cmdline_has: str = "", exclude: Collection[int] = ()) -> float:
    """CPU so far of the processes called ``name`` whose command line has ``cmdline_has``, but those in ``exclude``."""
    total = 0.0
    for process in psutil.process_iter(["name", "cmdline"]):
        with suppress(psutil.Error):
            if process.pid in exclude:
                continue
            if process.info["name"] == name and cmdline_has in " ".join(process.info["cmdline"] or ()):
                times = process.cpu_times()
                total += times.user + times.system
    return total


def postgres_cpu_seconds(database: str = BENCH_DATABASE, exclude: Collection[int] = ()) -> float:
    """CPU so far of the PostgreSQL backends serving ``database`` (those still connected), but those in ``exclude``."""
    return server_cpu_seconds("postgres", f" {database} ", exclude)


def cpu_steal_percent(since: Any) -> float:
    """Share of all CPU time since ``since`` (a ``psutil.cpu_times()``) that other guests of the host took.

    On a virtual machine a busy neighbour shows up here, and every figure of the run is then suspect.
    """
    now = psutil.cpu_times()
    total = sum(now) - sum(since)
    return 100 * (getattr(now, "steal", 0.0) - getattr(since, "steal", 0.0)) / total if total > 0 else 0.0


@dataclass
class Bench:
    """Owns every subprocess and scratch resource of one benchmark run; cleans them up on exit."""

    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="roadie-bench-")))
    processes: list[Process] = field(default_factory=list)
    stack: ExitStack = field(default_factory=ExitStack)
    cpu_times_before: Any = None

    def __enter__(self) -> Bench:
        configure_environment()
        print(f"{os.cpu_count()} CPUs, 1-minute load average {os.getloadavg()[0]:.2f} before the run")
        self.cpu_times_before = psutil.cpu_times()
        previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
        self.stack.callback(signal.signal, signal.SIGTERM, previous)
        try:
            self.stack.enter_context(scratch_database())
            flush_broker()
            self.stack.callback(flush_broker)
            self.stack.callback(self.stop_all)  # runs first: processes stop before the database is dropped
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        self.stack.close()
        print(f"CPU stolen by the hypervisor during the run: {cpu_steal_percent(self.cpu_times_before):.1f} %")
        if exc_type is None:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        else:
            print(f"subprocess logs kept in {self.log_dir}", file=sys.stderr)

    def start(self, name: str, command: list[str], *, capture_stdout: bool = False) -> Process:
        process = Process(name, command, self.log_dir / f"{name}.log", cwd=ROOT)
        process.start(capture_stdout=capture_stdout)
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    # The platform's processes, with the command lines of roadie.processes that roadie up and compose run.

    def relay(self) -> Process:
        return self.start("relay", relay_command())

    def uvicorn(self, name: str, app: str, port: int, workers: int = 1) -> Process:
        """uvicorn with ``workers`` worker processes; identical flags for Roadie and the baseline."""
        command = [
            sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        return self.start(name, command)

    def celery_worker(self, name: str, app: str) -> Process:
        """ONE worker of the ``default`` pool as production runs it, with ``app``; identical flags for both sides."""
        return self.start(name, POOLS["default"].command(node=f"{name}@%h", app=app))


def wait_until(
    condition: Callable[[], bool], *, timeout: float, what: str, process: Process | None = None, every: float = 0.05
) -> None:
    """Poll until ``condition`` holds; fail early when ``process`` died meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and not process.alive:
            raise RuntimeError(f"{process.name} exited while waiting for {what}:\n{process.log_tail()}")
        time.sleep(every)
    tail = f":\n{process.log_tail()}" if process is not None else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")


# --- stats and tables ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyStats:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def summarize(latencies_s: Sequence[float], seconds: float) -> LatencyStats:
    """Requests/s over the window and the p50/p99 latency (``statistics.quantiles``, inclusive)."""
    if len(latencies_s) < 2:
        raise ValueError(f"need at least two samples, got {len(latencies_s)}")
    cuts = statistics.quantiles(latencies_s, n=100, method="inclusive")
    return LatencyStats(len(latencies_s), seconds, cuts[49] * 1000, cuts[98] * 1000)


@dataclass(frozen=True)
class Row:
    metric: str
    roadie: float
    baseline: float
    decimals: int = 1


def print_table(title: str, rows: Sequence[Row]) -> None:
    """Each metric for Roadie and the baseline, and the ratio roadie / baseline."""
    header = ("metric", "roadie", "baseline", "roadie/baseline")
    cells = [
        (
            row.metric,
            f"{row.roadie:,.{row.decimals}f}",
            f"{row.baseline:,.{row.decimals}f}",
            f"{row.roadie / row.baseline:.2f}x" if row.baseline else "n/a",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]

    def fmt(line: Sequence[str]) -> str:
        return "  ".join([line[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True))])

    print(f"\n{title}")
    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    for line in cells:
        print(fmt(line))


def run_main(main: Callable[[], int]) -> None:
    """Run a benchmark's main; Ctrl-C still stops every subprocess and drops the scratch database."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; subprocesses stopped and the scratch database dropped", file=sys.stderr)
        sys.exit(130)
