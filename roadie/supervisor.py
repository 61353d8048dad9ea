"""``roadie up``: the whole process set on one machine, without Docker.

Starts the embedded servers when no URLs are configured, migrates, then runs the API, the
outbox relay, one Celery worker per pool and beat. A process that dies is started again after a
back-off (see :class:`RestartPolicy`); everything stops on Ctrl-C or SIGTERM, or when one process
keeps dying, which is named.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from roadie.chain.localnet import embedded_chain_wanted, start_embedded_chain
from roadie.embedded import EmbeddedPostgres, EmbeddedRedis
from roadie.flower import authentication_configured
from roadie.ipfs.node import LocalIpfsNode, answers
from roadie.processes import POOLS, ProcessGroup, migrate_command, process_set
from roadie.settings import Settings, get_settings


def worker_metrics_env(name: str, settings: Settings) -> dict[str, str]:
    """One metrics port per pool on this machine: ROADIE_WORKER_METRICS_PORT + the pool's index."""
    pool = name.removeprefix("worker-")
    if not name.startswith("worker-") or pool not in POOLS or settings.worker_metrics_port == 0:
        return {}
    return {"ROADIE_WORKER_METRICS_PORT": str(settings.worker_metrics_port + list(POOLS).index(pool))}


def process_commands(settings: Settings) -> dict[str, list[str]]:
    """The process set (:func:`roadie.processes.process_set`); Flower only when its credentials are set."""
    commands = process_set(settings)
    if not authentication_configured(settings):  # Flower never runs unauthenticated: without credentials, no Flower
        del commands["flower"]
    return commands


#: Embedded servers not restarted behind the workers' backs: a local chain that died lost its last seconds
#: (it writes its state every two seconds), which the workers' journal may already count on.
NOT_RESTARTED = frozenset({"localnet"})


class ProcessKeepsDyingError(RuntimeError):
    """A process died too often in too short a time: restarting it again would only hide the fault."""


@dataclass(frozen=True)
class RestartPolicy:
    """Restart a dead process after ``first_delay_s``, doubling per recent death up to ``max_delay_s``.

    A process that dies ``max_deaths`` times within ``window_s`` is not restarted: ``roadie up`` stops.
    """

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_deaths: int = 5
    window_s: float = 300.0

    def delay(self, recent_deaths: int) -> float:
        return min(self.first_delay_s * 2.0 ** max(recent_deaths - 1, 0), self.max_delay_s)


def describe_exit(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        with suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


@dataclass
class Supervisor:
    """Restarts the processes it watches when they die, saying so on stdout; call :meth:`check` regularly."""

    processes: dict[str, ProcessGroup]
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    deaths: dict[str, deque[float]] = field(default_factory=dict)
    restart_at: dict[str, float] = field(default_factory=dict)

    def check(self) -> None:
        """Note new deaths, start what is due; raises :class:`ProcessKeepsDyingError` when the policy gives up."""
        now = time.monotonic()
        for name, process in self.processes.items():
            if name in self.restart_at:
                if now >= self.restart_at[name]:
                    del self.restart_at[name]
                    process.start()
                    print(f"{name} restarted (pid {process.pid})")
            elif not process.alive:
                self._died(name, process, now)

    def _died(self, name: str, process: ProcessGroup, now: float) -> None:
        how = describe_exit(process.returncode)
        process.wait_stopped(0)  # reap it, and SIGKILL pool children its death left behind
        if name in NOT_RESTARTED:
            raise ProcessKeepsDyingError(f"{name} {how}; it is not restarted; see {process.log_path}")
        recent = self.deaths.setdefault(name, deque())
        recent.append(now)
        while recent and recent[0] < now - self.policy.window_s:
            recent.popleft()
        if len(recent) >= self.policy.max_deaths:
            raise ProcessKeepsDyingError(
                f"{name} {how}: {len(recent)} deaths in {self.policy.window_s:.0f} s, "
                f"so it is not restarted again; see {process.log_path}"
            )
        delay = self.policy.delay(len(recent))
        self.restart_at[name] = now + delay
        print(f"{name} {how}; restarting it in {delay:g} s; see {process.log_path}")


@dataclass
class Platform:
    settings: Settings
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    processes: dict[str, ProcessGroup] = field(default_factory=dict)
    supervisor: Supervisor = field(init=False)
    embedded: list[EmbeddedPostgres | EmbeddedRedis | LocalIpfsNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(self.processes)

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    def start_servers(self) -> None:
        home = self.settings.home.resolve()
        home.mkdir(parents=True, exist_ok=True)
        if self.settings.embedded_database:
            postgres = EmbeddedPostgres(home / "pg", self.settings.embedded_pg_port)
            self.embedded.append(postgres)
            self.env["ROADIE_DATABASE_URL"] = postgres.start()
            print(f"embedded PostgreSQL on 127.0.0.1:{postgres.port} (data in {postgres.data_dir})")
        if self.settings.embedded_broker:
            broker = EmbeddedRedis(home / "redis", self.settings.embedded_redis_port)
            self.embedded.append(broker)
            self.env["ROADIE_BROKER_URL"] = broker.start()
            print(f"embedded Redis on 127.0.0.1:{broker.port} (data in {broker.data_dir})")
        if embedded_chain_wanted(self.settings):
            self.processes["localnet"] = start_embedded_chain(self.settings, self.env)
            state = self.settings.home.resolve() / "localnet"
            print(f"embedded local Solana chain on {self.settings.solana_rpc_url} (state in {state})")
        ipfs_addr = self.settings.ipfs_api_addr
        if ipfs_addr == Settings.model_fields["ipfs_api_addr"].default and not answers(ipfs_addr):
            ipfs = LocalIpfsNode.serving(ipfs_addr, home / "ipfs" / "repo")
            self.embedded.append(ipfs)
            ipfs.start()
            print(f"embedded IPFS node (js-ipfs) at {ipfs_addr} (repo in {ipfs.repo})")

    def migrate(self) -> None:
        subprocess.run(
            migrate_command(),
            check=True,
            env=self.env,
            cwd=Path(__file__).resolve().parent.parent,
        )

    def start_processes(self) -> None:
        logs = self.settings.home.resolve() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name, command in process_commands(self.settings).items():
            env = self.env | worker_metrics_env(name, self.settings)
            self.processes[name] = ProcessGroup(name, command, logs / f"{name}.log", env=env).start()
        print(f"processes: {', '.join(self.processes)}; logs in {logs}")

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.supervisor.check()
            with suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/readyz", timeout=5).status_code == 200:
                    return
            time.sleep(0.25)
        raise RuntimeError(f"the API at {self.base_url} did not become ready in {timeout_s:.0f}s")

    def stop(self) -> None:
        """SIGTERM every process (warm shutdown), SIGKILL what is left after 20 s, then the servers."""
        for process in self.processes.values():
            process.signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            process.wait_stopped(deadline - time.monotonic())
        self.processes.clear()
        for server in reversed(self.embedded):
            server.stop()
        self.embedded.clear()


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops ``roadie up`` the way Ctrl-C does."""
    raise KeyboardInterrupt


#: Reports one long step of starting the platform while it runs (the demo shows a live display).
StepReporter = Callable[[str], AbstractContextManager[object]]


@contextmanager
def running_platform(
    settings: Settings | None = None, *, step: StepReporter = lambda what: nullcontext()
) -> Iterator[Platform]:
    """The platform, up and ready, for as long as the block runs; SIGTERM ends the block too."""
    platform = Platform(settings or get_settings())
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        with step("starting the servers (PostgreSQL, Redis, the local chain, IPFS)"):
            platform.start_servers()
        with step("migrating the database"):
            platform.migrate()
        with step("starting the API, the relay, beat and the worker pools"):
            platform.start_processes()
            platform.wait_ready()
        yield platform
    finally:
        platform.stop()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


def up() -> None:
    """Run until Ctrl-C or SIGTERM, restarting what dies; exit 1 when a process keeps dying."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # each death and restart shows at once, also in a pipe
    try:
        with running_platform() as platform:
            print(f"Roadie is up: API at {platform.base_url} (Ctrl-C stops every process)")
            if "flower" in platform.processes:
                print(f"Flower at http://{platform.settings.flower_address}:{platform.settings.flower_port}")
            else:
                print("Flower not started: set ROADIE_FLOWER_BASIC_AUTH (or OAuth) to run it")
            try:
                while True:
                    platform.supervisor.check()
                    time.sleep(0.5)
            except KeyboardInterrupt:
                print("stopping...")
    except ProcessKeepsDyingError as exc:
        print(f"stopping: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
