"""Chaos run: the platform under load while its processes are killed, its broker flushed and a worker cut off.

    python -m bench.chaos --short     # CI's form: each kind of fault once, under 3 minutes
    python -m bench.chaos             # the long form: rounds of faults for --duration seconds

It starts the API, the outbox relay, two ``default`` workers, a ``chain`` worker and two beats
on a scratch database and Redis database, submits echo jobs through the API at a steady rate, and
meanwhile: SIGKILLs a worker, the relay, the chain worker and a beat (each restarted by this script
a moment later, as a supervisor would), flushes the broker, and cuts a third worker, which runs
in a network namespace of its own, off from Postgres and Redis for longer than the heartbeat
timeout. The namespace needs root; where it cannot be made that part is skipped, with a message.

At the end it waits for the jobs to finish and prints how many were lost (accepted but missing,
failed or cancelled), duplicated (an outcome recorded twice) and stuck (not finished in time),
and exits non-zero on any. See docs/chaos.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from bench.common import (
    DATABASE_URL,
    REDIS_URL,
    ROOT,
    Bench,
    Process,
    create_api_key,
    database_connection,
    flush_broker,
    free_port,
    run_main,
    wait_port,
    wait_until,
)
from bench.tcp_relay import relay_to
from roadie.chain.localnet import start_embedded_chain
from roadie.processes import POOLS, beat_command
from roadie.settings import get_settings

#: Fast beats, reaping and re-sending, so each fault is recovered from in seconds; many deliveries
#: allowed, so that a job hit by several kills in a row is retried rather than failed as worker_lost.
CHAOS_ENV = {
    "ROADIE_HEARTBEAT_INTERVAL_S": "0.5",
    "ROADIE_HEARTBEAT_TIMEOUT_S": "3",
    "ROADIE_REPUBLISH_AFTER_S": "2",
    "ROADIE_RELAY_POLL_INTERVAL_S": "0.2",
    "ROADIE_RETRY_BACKOFF_BASE_S": "0.2",
    "ROADIE_RETRY_BACKOFF_MAX_S": "1",
    "ROADIE_MAX_DELIVERIES": "50",
    "ROADIE_SCHEDULE_SWEEP_OUTBOX": "every 1s",
    "ROADIE_SCHEDULE_REAP_LOST_JOBS": "every 1s",
    "ROADIE_WORKER_METRICS_PORT": "0",
    "ROADIE_LOG_LEVEL": "INFO",
}


#: The log event of a worker whose outcome was refused because its lease had moved on.
LEASE_LOST = '"job.outcome_refused_lease_lost"'


@dataclass(frozen=True)
class Plan:
    rate: float  # jobs submitted per second
    gap_s: float  # between two faults
    rounds: int  # how many times the list of faults is gone through
    cut_s: float  # how long the namespaced worker is cut off at most (until its jobs are taken over)
    drain_s: float  # how long the jobs may take to finish after the load stops
    mints: int  # tracks minted per round


SHORT = Plan(rate=5, gap_s=3, rounds=1, cut_s=12, drain_s=60, mints=3)


def long_plan(duration_s: float) -> Plan:
    gap_s, faults = 10.0, 6
    rounds = max(1, round(duration_s / (gap_s * faults)))
    return Plan(rate=20, gap_s=gap_s, rounds=rounds, cut_s=60, drain_s=180, mints=10)


# --- load ----------------------------------------------------------------------------------------


@dataclass
class Load:
    """Submits echo jobs at a steady rate from a thread; a request that got no answer is sent again
    with the same Idempotency-Key, so every job the API accepted is known by its id."""

    base_url: str
    key: str
    rate: float
    accepted: list[str] = field(default_factory=list)
    tracks: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Load:
        self.thread = threading.Thread(target=self._run, name="load", daemon=True)
        self.thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=10) as client:
            due = time.monotonic()
            for n in range(1_000_000):
                if self.stop.is_set():
                    return
                payload = {"n": n, "sleep_ms": random.randint(0, 250)}
                self._submit(client, payload, f"chaos-{uuid.uuid4()}")
                due += 1 / self.rate
                self.stop.wait(max(0.0, due - time.monotonic()))

    def slow(self, count: int, sleep_ms: int) -> None:
        """``count`` echo jobs of ``sleep_ms`` each, so that a worker is caught mid-run."""
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=10) as client:
            for _ in range(count):
                self._submit(client, {"sleep_ms": sleep_ms, "slow": True}, f"chaos-{uuid.uuid4()}")

    def mint(self, tracks: int) -> None:
        """``tracks`` new tracks, each with its nft.mint job, for the chain worker to be killed under."""
        from solders.keypair import Keypair

        from tests.fixtures.chain import mintable_track

        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=10) as client:
            for _ in range(tracks):
                track_id = mintable_track(str(Keypair().pubkey()), title="Chaos")
                self.tracks.append(track_id)
                self._submit(client, {"track_id": track_id}, f"chaos-{uuid.uuid4()}", "nft.mint")

    def _submit(self, client: httpx.Client, payload: dict[str, Any], key: str, type_: str = "platform.echo") -> None:
        for _ in range(30):
            with suppress(httpx.HTTPError):
                response = client.post(
                    "/v1/jobs", json={"type": type_, "payload": payload}, headers={"Idempotency-Key": key}
                )
                if response.status_code in (200, 201, 202):
                    self.accepted.append(response.json()["id"])
                    return
            time.sleep(0.5)
        raise RuntimeError(f"the API did not accept a {type_} job in 30 tries: {payload}")


# --- a worker on another "host": a network namespace ---------------------------------------------


class Forwarder:
    """TCP from the namespace's side of the link to a server on 127.0.0.1, from a thread of this process.

    Postgres and Redis listen on loopback only; the cut-off worker reaches them through here.
    """

    def __init__(self, address: str, targets: list[int]) -> None:
        self.address, self.targets = address, targets
        self.ports: dict[int, int] = {}
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), name="forwarder", daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("the forwarder did not start")

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def open_all() -> None:
            for target in self.targets:
                server = await asyncio.start_server(relay_to(target), self.address, 0)
                self.ports[target] = server.sockets[0].getsockname()[1]

        self.loop.run_until_complete(open_all())
        ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Namespace:
    """A network namespace joined to this one by a veth pair (a /30 of its own); ``cut`` takes the
    link down, so packets are dropped as in a real partition (no reset reaches either side)."""

    name: str
    host_if: str
    subnet: int
    host_ip: str = ""
    inside_ip: str = ""

    @classmethod
    def create(cls) -> Namespace:
        tag = os.getpid() % 10_000
        space = cls(f"roadie-chaos-{os.getpid()}", f"rchaos{tag}", tag % 250)
        space.host_ip, space.inside_ip = f"10.213.{space.subnet}.1", f"10.213.{space.subnet}.2"
        inside_if = f"rchaos{tag}n"
        _ip("netns", "add", space.name)
        try:
            _ip("link", "add", space.host_if, "type", "veth", "peer", "name", inside_if)
            _ip("link", "set", inside_if, "netns", space.name)
            _ip("addr", "add", f"{space.host_ip}/30", "dev", space.host_if)
            _ip("link", "set", space.host_if, "up")
            _ip("-n", space.name, "addr", "add", f"{space.inside_ip}/30", "dev", inside_if)
            _ip("-n", space.name, "link", "set", inside_if, "up")
            _ip("-n", space.name, "link", "set", "lo", "up")
        except BaseException:
            space.remove()
            raise
        return space

    def cut(self) -> None:
        _ip("link", "set", self.host_if, "down")

    def heal(self) -> None:
        _ip("link", "set", self.host_if, "up")

    def remove(self) -> None:
        with suppress(subprocess.CalledProcessError):
            _ip("link", "del", self.host_if)
        with suppress(subprocess.CalledProcessError):
            _ip("netns", "del", self.name)


@contextmanager
def namespace_or_none() -> Iterator[Namespace | None]:
    """The namespace, removed afterwards; None (and a message saying why) where it cannot be made."""
    if os.geteuid() != 0:
        print("partition: SKIPPED - making a network namespace needs root; run as root for this part")
        yield None
        return
    try:
        space = Namespace.create()
    except (OSError, subprocess.CalledProcessError) as exc:
        reason = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        print(f"partition: SKIPPED - network namespaces are not allowed here ({reason})")
        yield None
        return
    try:
        yield space
    finally:
        space.remove()


def _via(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    address = f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{address}" if len(netloc) == 2 else address))


# --- the platform --------------------------------------------------------------------------------


def worker_command(name: str, queue: str) -> list[str]:
    """A worker of pool ``queue`` with one process, named ``name`` (two run on ``default``)."""
    return replace(POOLS[queue], concurrency=1).command(node=f"{name}@%h")


@dataclass
class Platform:
    bench: Bench
    api_port: int = 0
    cut_off: Process | None = None

    def start(self, space: Namespace | None) -> None:
        self.api_port = free_port()
        api = self.bench.uvicorn("api", "api.app:app", self.api_port)
        self.bench.relay()
        for name, queue in (
            ("worker-default-1", "default"),
            ("worker-default-2", "default"),
            ("worker-chain", "chain"),
        ):
            self.bench.start(name, worker_command(name, queue))
        for n in (1, 2):
            self.bench.start(f"beat-{n}", beat_command(self.bench.log_dir / f"beat-{n}-schedule"))
        if space is not None:
            self.cut_off = self._namespaced_worker(space)
        chain = start_embedded_chain(get_settings(), dict(os.environ))  # `roadie localnet`, provisioned
        self.bench.stack.callback(chain.stop)
        wait_port(self.api_port, api, timeout=60)

    def _namespaced_worker(self, space: Namespace) -> Process:
        postgres = urlsplit(DATABASE_URL).port or 5432
        redis_port = urlsplit(REDIS_URL).port or 6379
        forwarder = Forwarder(space.host_ip, [postgres, redis_port])
        self.bench.stack.callback(forwarder.stop)
        env = dict(os.environ) | {
            "ROADIE_DATABASE_URL": _via(DATABASE_URL, space.host_ip, forwarder.ports[postgres]),
            "ROADIE_BROKER_URL": _via(REDIS_URL, space.host_ip, forwarder.ports[redis_port]),
        }
        name = "worker-cut-off"
        command = ["ip", "netns", "exec", space.name, *worker_command(name, "default")]
        process = Process(name, command, self.bench.log_dir / f"{name}.log", env=env, cwd=ROOT)
        process.start()
        self.bench.processes.append(process)
        return process

    def process(self, name: str) -> Process:
        return next(p for p in self.bench.processes if p.name == name)

    def kill_and_restart(self, name: str, *, busy: bool = False) -> None:
        """SIGKILL the process group (a worker: mid-job if ``busy``), then start it again."""
        if busy:
            try:
                wait_until(lambda: running_on(name) > 0, timeout=60, what=f"a job running on {name}", every=0.05)
            except TimeoutError:
                print(f"  {name} ran no job within 60s; killed idle")
        process = self.process(name)
        process.kill()
        time.sleep(1)  # a supervisor restarts after a back-off
        process.start()
        print(f"  SIGKILLed {name} (process group) and started it again")


def faults(platform: Platform, load: Load, space: Namespace | None, plan: Plan) -> list[tuple[str, Callable[[], None]]]:
    def kill_chain_worker() -> None:
        load.mint(plan.mints)
        platform.kill_and_restart("worker-chain", busy=True)

    def flush() -> None:
        flush_broker()
        print("  flushed the broker (FLUSHDB): queued and unacknowledged messages are gone")

    def partition() -> None:
        if space is None or platform.cut_off is None:
            print("  partition skipped (no network namespace)")
            return
        cut_off = platform.cut_off
        load.slow(4, sleep_ms=8000)  # one per default worker: the one to be cut off is caught mid-run
        with suppress(TimeoutError):
            wait_until(lambda: slow_running_on(cut_off.name), timeout=30, what="a slow job on the worker", every=0.1)
        space.cut()
        cut_at = time.monotonic()
        held = jobs_running_on(cut_off.name)
        refused = cut_off.log().count(LEASE_LOST)
        print(f"  cut {cut_off.name} off from Postgres and Redis, holding {len(held)} job(s)")
        with suppress(TimeoutError):  # until the reaper gave its jobs to others, or cut_s at most
            wait_until(
                lambda: taken_over(held, cut_off.name) == len(held) and time.monotonic() - cut_at > 4,
                timeout=plan.cut_s,
                what="its jobs to be taken over",
                every=0.2,
            )
        space.heal()
        print(f"  healed after {time.monotonic() - cut_at:.0f}s")
        with suppress(TimeoutError):  # TCP retransmits with back-off: stalled statements land seconds after the heal
            wait_until(lambda: count_unfinished(held) == 0, timeout=60, what="the jobs it held", every=0.2)
        taken = taken_over(held, cut_off.name)
        late = cut_off.log().count(LEASE_LOST) - refused
        print(f"  {taken} of its jobs were taken over meanwhile; {late} late outcome(s) of it refused")

    return [
        ("SIGKILL the chain worker mid-mint", kill_chain_worker),
        ("SIGKILL a default worker mid-job", lambda: platform.kill_and_restart("worker-default-1", busy=True)),
        ("SIGKILL the relay", lambda: platform.kill_and_restart("relay")),
        ("flush the broker", flush),
        ("SIGKILL a beat (two run at once)", lambda: platform.kill_and_restart("beat-1")),
        ("partition a worker", partition),
    ]


# --- the verdict ---------------------------------------------------------------------------------


@dataclass
class Verdict:
    lost: list[str]
    duplicated: list[str]
    stuck: list[str]
    refused_late_outcomes: int

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.stuck)


def jobs_running_on(worker: str) -> list[str]:
    """Jobs that the worker named ``worker`` holds a lease of."""
    with database_connection() as connection:
        rows = connection.execute(
            "SELECT job_id::text FROM job_attempts WHERE outcome = 'running' AND worker LIKE %s", [f"{worker}@%"]
        ).fetchall()
    return [str(job_id) for (job_id,) in rows]


def running_on(worker: str) -> int:
    return len(jobs_running_on(worker))


def slow_running_on(worker: str) -> bool:
    """Whether the worker holds one of the slow jobs :meth:`Load.slow` submits."""
    with database_connection() as connection:
        row = connection.execute(
            "SELECT count(*) FROM job_attempts a JOIN jobs j ON j.id = a.job_id"
            " WHERE a.outcome = 'running' AND a.worker LIKE %s AND j.payload ? 'slow'",
            [f"{worker}@%"],
        ).fetchone()
    return bool(row and int(str(row[0])))


def taken_over(jobs: list[str], worker: str) -> int:
    """How many of ``jobs`` the worker lost to a successor (its attempt was closed as lost)."""
    with database_connection() as connection:
        row = connection.execute(
            "SELECT count(*) FROM job_attempts WHERE job_id = ANY(%s::uuid[]) AND outcome = 'lost' AND worker LIKE %s",
            [jobs, f"{worker}@%"],
        ).fetchone()
    return int(str(row[0])) if row else 0


def count_unfinished(accepted: list[str]) -> int:
    with database_connection() as connection:
        row = connection.execute(
            "SELECT count(*) FROM jobs WHERE id = ANY(%s::uuid[])"
            " AND status NOT IN ('succeeded', 'failed', 'cancelled')",
            [accepted],
        ).fetchone()
    return int(str(row[0])) if row else 0


def verdict(accepted: list[str], tracks: list[str], logs: list[Process]) -> Verdict:
    """Every accepted job finished, none succeeded twice, and each track minted once (one landed send)."""
    with database_connection() as connection:
        found = connection.execute(
            "SELECT t.id::text, count(s.id) FROM tracks t LEFT JOIN nfts n ON n.track_id = t.id"
            " LEFT JOIN chain_sends s ON s.nft_id = n.id AND s.status IN ('confirmed', 'finalized')"
            " WHERE t.id = ANY(%s::uuid[]) GROUP BY t.id",
            [tracks],
        )
        minted = {str(track): int(str(count)) for track, count in found.fetchall()}
        rows = connection.execute("SELECT id::text, status FROM jobs WHERE id = ANY(%s::uuid[])", [accepted])
        statuses = {str(job_id): str(status) for job_id, status in rows.fetchall()}
        twice = [
            str(job_id)
            for (job_id,) in connection.execute(
                "SELECT job_id FROM job_attempts WHERE job_id = ANY(%s::uuid[]) AND outcome = 'succeeded'"
                " GROUP BY job_id HAVING count(*) > 1",
                [accepted],
            ).fetchall()
        ]
    twice += [f"track {track} (landed mints: {minted.get(track, 0)})" for track in tracks if minted.get(track) != 1]
    lost = [job for job in accepted if statuses.get(job) in (None, "failed", "cancelled")]
    stuck = [job for job in accepted if statuses.get(job) not in (None, "succeeded", "failed", "cancelled")]
    refused = sum(p.log().count(LEASE_LOST) for p in logs if p.name.startswith("worker-"))
    return Verdict(lost, twice, stuck, refused)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="each fault once, under 3 minutes (CI)")
    parser.add_argument("--duration", type=float, default=600, help="long form: seconds of faults under load")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs even when all went well")
    args = parser.parse_args()
    plan = SHORT if args.short else long_plan(args.duration)
    home = Path(tempfile.mkdtemp(prefix="roadie-chaos-"))
    os.environ.update(
        CHAOS_ENV
        | {
            "ROADIE_HOME": str(home),
            "ROADIE_SOLANA_RPC_URL": f"http://127.0.0.1:{free_port()}",
            "ROADIE_KEYPAIR_PATH": str(home / "platform-keypair.json"),
            "ROADIE_CHAIN_POLL_INTERVAL_S": "0.1",
            "ROADIE_LOCALNET_SLOT_MS": "200",
        }
    )
    started = time.monotonic()
    with Bench() as bench, namespace_or_none() as space:
        bench.stack.callback(shutil.rmtree, home, True)
        platform = Platform(bench)
        platform.start(space)
        load = Load(f"http://127.0.0.1:{platform.api_port}", create_api_key(), plan.rate).start()
        time.sleep(plan.gap_s)
        for round_ in range(plan.rounds):
            for what, fault in faults(platform, load, space, plan):
                print(f"[{time.monotonic() - started:5.0f}s] round {round_ + 1}: {what}", flush=True)
                fault()
                time.sleep(plan.gap_s)
        load.finish()
        print(f"[{time.monotonic() - started:5.0f}s] load stopped: {len(load.accepted)} jobs accepted; draining")
        with suppress(TimeoutError):
            wait_until(lambda: count_unfinished(load.accepted) == 0, timeout=plan.drain_s, what="the jobs", every=0.5)
        result = verdict(load.accepted, load.tracks, bench.processes)
        dead = [p.name for p in bench.processes if not p.alive]
        if platform.cut_off is not None:
            platform.cut_off.stop()  # before its namespace goes
        if not result.clean or dead or args.keep_logs:
            kept = Path(tempfile.mkdtemp(prefix="roadie-chaos-logs-"))
            shutil.copytree(bench.log_dir, kept, dirs_exist_ok=True)
            print(f"process logs kept in {kept}")
    print(f"accepted {len(load.accepted)} jobs in {time.monotonic() - started:.0f}s")
    print(f"late outcomes refused because the lease had moved on: {result.refused_late_outcomes}")
    print(f"lost {len(result.lost)}  duplicated {len(result.duplicated)}  stuck {len(result.stuck)}")
    for label, jobs in (("lost", result.lost), ("duplicated", result.duplicated), ("stuck", result.stuck)):
        if jobs:
            print(f"  {label}: {', '.join(jobs[:20])}{' ...' if len(jobs) > 20 else ''}")
    if dead:
        print(f"processes not running at the end: {', '.join(dead)}")
    return 0 if result.clean and not dead else 1


if __name__ == "__main__":
    run_main(main)
