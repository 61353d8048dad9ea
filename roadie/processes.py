"""The platform's process set, defined once, and the process groups that run it.

:func:`process_set` is the table of every long-running process (name -> command line) and
:data:`POOLS` the worker pools in it. ``roadie up`` runs that table, the tests and the benchmarks
build their processes from the same functions, and ``tests/test_compose.py`` fails when a service
of ``docker-compose.yml`` runs anything else.

:class:`ProcessGroup` is a subprocess that leads its own process group, so one signal reaches a
Celery worker and its pool.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from roadie.settings import Settings

CELERY_APP = "workers.app"


def python_m(module: str, *args: str) -> list[str]:
    """``module`` run by this interpreter: what a console script of the image (``celery``, ``roadie``) runs."""
    return [sys.executable, "-m", module, *args]


@dataclass(frozen=True)
class Pool:
    """Celery workers consuming ``queue`` (one queue, or several separated by commas).

    ``max_memory_per_child_kib`` None keeps the app's leak guard (``worker_max_memory_per_child``);
    ``max_tasks_per_child`` None replaces no child after a count of jobs. ``threads``: one process
    running ``concurrency`` jobs in threads, for a pool that mostly waits on the network.
    """

    queue: str
    concurrency: int
    max_memory_per_child_kib: int | None = None
    max_tasks_per_child: int | None = None
    threads: bool = False

    def command(self, *, node: str | None = None, app: str = CELERY_APP) -> list[str]:
        """A worker of this pool. ``node`` (default ``<queue>@%h``) and ``app`` are for tests and benchmarks.

        Prefetch 1: a process holds at most the job it runs. No gossip or mingle: a worker needs
        nothing from the others, and both add broker traffic that grows with their number.
        """
        command = python_m("celery", "-A", app, "worker", "-Q", self.queue, "-n", node or f"{self.queue}@%h")
        command += ["--concurrency", str(self.concurrency), "--prefetch-multiplier", "1"]
        command += ["--without-gossip", "--without-mingle"]
        if self.threads:
            command += ["--pool", "threads"]
        if self.max_tasks_per_child is not None:
            command += ["--max-tasks-per-child", str(self.max_tasks_per_child)]
        if self.max_memory_per_child_kib is not None:
            command += ["--max-memory-per-child", str(self.max_memory_per_child_kib)]
        return command


#: One worker per pool in every deployment (``roadie up`` and ``docker-compose.yml`` alike); scale a
#: pool out with more workers, not by changing a row (docs/deployment.md). I/O-bound pools (``ipfs``,
#: ``chain``: waits on the node and on finality) run more processes than CPU-bound ``media``; the
#: indexer is a single consumer by design. The memory guards fit the compose services' memory limits.
POOLS: dict[str, Pool] = {
    pool.queue: pool
    for pool in (
        Pool("default", 2, max_memory_per_child_kib=400_000),
        Pool("media", 1, max_memory_per_child_kib=1_500_000, max_tasks_per_child=50),
        Pool("ipfs", 4, max_memory_per_child_kib=300_000, max_tasks_per_child=500),
        Pool("chain", 2, max_memory_per_child_kib=300_000, max_tasks_per_child=500),
        Pool("ledger", 1, max_memory_per_child_kib=300_000, max_tasks_per_child=500),
        Pool("indexer", 1, max_memory_per_child_kib=300_000, max_tasks_per_child=500),
        # Deliveries wait on receivers, some slow: threads of one process (a delivery has its own
        # deadline, which a thread pool's missing time limits would otherwise be).
        Pool("webhooks", 8, threads=True),
    )
}


def api_command(host: str, port: int, *, access_log: bool = False) -> list[str]:
    """The intake API; request lines are logged by the API itself, uvicorn's access log is off."""
    access = "--access-log" if access_log else "--no-access-log"
    return python_m("roadie.cli", "api", "--host", host, "--port", str(port), access)


def relay_command() -> list[str]:
    return python_m("roadie.cli", "relay")


def beat_command(schedule: Path) -> list[str]:
    """Beat, keeping its schedule state in ``schedule``; ``--quiet``: no free-text banner, every log line is JSON."""
    return python_m("celery", "-A", CELERY_APP, "--quiet", "beat", "-s", str(schedule))


def flower_command() -> list[str]:
    return python_m("roadie.cli", "flower")


def migrate_command() -> list[str]:
    """The one-shot schema upgrade every other process waits for."""
    return python_m("alembic", "upgrade", "head")


def process_set(settings: Settings) -> dict[str, list[str]]:
    """Every long-running process of the platform, by name: the Procfile ``roadie up`` and compose share.

    Log levels come from ``ROADIE_LOG_LEVEL`` (Roadie's logging replaces Celery's, so Celery's
    ``--loglevel`` would change nothing).
    """
    return {
        "api": api_command(settings.api_host, settings.api_port),
        "relay": relay_command(),
        "beat": beat_command(settings.home.resolve() / "celerybeat-schedule"),
        **{f"worker-{name}": pool.command() for name, pool in POOLS.items()},
        "flower": flower_command(),
    }


@dataclass
class ProcessGroup:
    name: str
    command: list[str]
    log_path: Path
    env: dict[str, str] | None = None  # None: this process's environment
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = None

    def start(self, *, capture_stdout: bool = False) -> ProcessGroup:
        """Start with output appended to the log (stdout piped instead when ``capture_stdout``)."""
        self._log_file = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE if capture_stdout else self._log_file,
            stderr=self._log_file if capture_stdout else subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} is not running"
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the whole group."""
        if self.popen is not None:
            with suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def wait_stopped(self, timeout: float) -> None:
        """Wait for the leader, SIGKILL the group if it takes longer, and kill pool children left behind."""
        if self.popen is not None:
            try:
                self.popen.wait(timeout=max(timeout, 0.1))
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(timeout=10)
            self.signal(signal.SIGKILL)  # children may outlive a leader that exited on its own
            if self.popen.stdout is not None:
                self.popen.stdout.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.popen = None

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        self.signal(signal.SIGTERM)
        self.wait_stopped(timeout)

    def kill(self) -> None:
        """SIGKILL the group: no chance to clean up, as after an OOM kill."""
        self.signal(signal.SIGKILL)
        self.wait_stopped(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])
