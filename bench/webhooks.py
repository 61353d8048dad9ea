"""Webhook deliveries: Roadie's relay and webhooks pool versus a bare httpx loop posting the same signed bodies.

    python -m bench.webhooks [--events 1000] [--latency-rate 5] [--latency-seconds 20]

One receiver (``bench/webhook_receiver.py``: uvicorn, its own process, verifies every signature with
the ``standardwebhooks`` package and answers 204) serves both sides, at ``http://127.0.0.1:<port>/hooks``,
an endpoint of a bench API client subscribed to ``job.succeeded`` (``ROADIE_WEBHOOK_ALLOWED_HOSTS``
allows 127.0.0.1, as the tests do).

Roadie runs the relay, ONE worker of the ``default`` pool (the echo jobs) and ONE worker of the
``webhooks`` pool (``roadie.processes.POOLS``: 8 threads), all as production starts them.

1. warm-up: ``--warmup`` echo jobs end to end, until the receiver got every event;
2. throughput: the relay is held (SIGSTOP) while ``--events`` echo jobs are accepted through the
   API's group commit, published by this process (``relay_once``) and run; each one's outcome
   writes its ``job.succeeded`` event (the trigger). t0: the relay resumes (SIGCONT), fans the
   events out into deliveries and their jobs, publishes them, and the webhooks worker delivers.
   Done when the receiver has every event and the ledger shows every delivery delivered. CPU of
   the delivery side between t0 and then: the relay, the webhooks worker, Postgres (the scratch
   database's backends);
3. latency: with everything running, echo jobs accepted open loop at ``--latency-rate`` per second
   for ``--latency-seconds``; for each, the time from its outcome (``jobs.finished_at``) to the
   receiver's arrival time, and to the ledger's ``delivered_at``.

Baseline (``bench/webhook_loop.py``, its own process): the same bodies (the envelopes of the
throughput events), each signed as it is posted with the same ``signature_header``, by 8 threads
with one keep-alive ``httpx.Client`` each; the same warm-up count first. Its window runs from its
first measured POST until the receiver has them all.

Roadie's POST latencies are the attempts' ``latency_ms`` (whole ms, the address lookup included);
the baseline's receiver CPU includes its warm-up POSTs. No ratio is printed when the hypervisor
stole more than 5 % of the CPU during the run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import statistics
import sys
import time
import uuid
from dataclasses import dataclass

import httpx
from sqlalchemy import select

from bench.common import (
    Bench,
    Process,
    Row,
    cpu_steal_percent,
    database_connection,
    free_port,
    postgres_cpu_seconds,
    print_table,
    run_main,
    sql_count,
    wait_port,
    wait_until,
)
from roadie.processes import POOLS

TIMEOUT_S = 300.0
#: Above this share of CPU stolen by the hypervisor, the run prints no ratio: a neighbour decided it.
STEAL_LIMIT = 5.0
SUBMIT_BATCH = 200
DELIVERED = "SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'"
SUCCEEDED = "SELECT count(*) FROM jobs WHERE status = 'succeeded' AND queue = 'default'"
#: Per job.succeeded event of the bench: its webhook-id, its job's outcome and its delivery (epoch seconds).
TIMELINE = """
    SELECT 'evt_' || replace(e.id::text, '-', ''), extract(epoch FROM j.finished_at),
           extract(epoch FROM d.delivered_at)
    FROM webhook_events e
    JOIN jobs j ON j.id = (e.data -> 'job' ->> 'id')::uuid
    JOIN webhook_deliveries d ON d.event_id = e.id
    WHERE e.created_at >= %s
"""


@dataclass(frozen=True)
class Window:
    """One side's measured part: how many deliveries, how long, and the CPU each process spent."""

    deliveries: int
    seconds: float
    cpu_s: dict[str, float]
    post_latencies_s: list[float]

    @property
    def per_second(self) -> float:
        return self.deliveries / self.seconds

    def cpu_us(self, *names: str) -> float:
        """CPU per delivery (µs) of the named processes."""
        return 1e6 * sum(self.cpu_s.get(name, 0.0) for name in names) / self.deliveries


def percentile_ms(samples: list[float], cut: int) -> float:
    """The ``cut``-th percentile in ms (``statistics.quantiles``, inclusive, as bench.common's summarize)."""
    return 1000 * statistics.quantiles(samples, n=100, method="inclusive")[cut - 1]


class Receiver:
    def __init__(self, bench: Bench) -> None:
        self.port = free_port()
        self.process = bench.uvicorn("receiver", "bench.webhook_receiver:app", self.port)
        wait_port(self.port, self.process)
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", trust_env=False)

    def count(self) -> int:
        return int(self.http.get("/received/count").text)

    def arrivals(self) -> tuple[dict[str, list[float]], int]:
        """Every arrival time by webhook-id since the last clear, and how many POSTs did not verify."""
        answer = self.http.get("/received").json()
        got: dict[str, list[float]] = {}
        for webhook_id, at in answer["arrivals"]:
            got.setdefault(webhook_id, []).append(at)
        return got, int(answer["unverified"])

    def clear(self) -> None:
        self.http.delete("/received").raise_for_status()

    def wait_for(self, count: int, process: Process) -> None:
        wait_until(lambda: self.count() >= count, timeout=TIMEOUT_S, what=f"{count} arrivals", process=process)


def register(url: str, secret: str) -> uuid.UUID:
    """A bench API client with an endpoint for ``url`` subscribed to job.succeeded; the client's id."""
    from models.webhooks import WebhookEndpoint
    from roadie import auth
    from roadie.db import async_engine, async_transaction, transaction
    from roadie.webhooks import signing

    async def create() -> uuid.UUID:
        try:
            async with async_transaction() as session:
                client, _ = await auth.create_client(session, "bench-webhooks", ["jobs:write", "webhooks:write"])
                return client.id
        finally:
            await async_engine().dispose()

    client_id = asyncio.run(create())
    with transaction() as session:
        session.add(
            WebhookEndpoint(client_id=client_id, url=url, events=["job.succeeded"], secret=signing.seal(secret))
        )
    return client_id


def submit(client_id: uuid.UUID, count: int, rate: float | None = None) -> None:
    """Accept ``count`` echo jobs of the client through the API's group commit: as fast as it goes, or
    open loop at ``rate`` per second (job i at start + i / rate)."""
    from models.platform import ApiClient
    from roadie.db import async_engine, async_transaction
    from roadie.jobs.group_commit import group_commit
    from roadie.jobs.types import job_types

    job_type = job_types()["platform.echo"]

    async def work() -> None:
        try:
            async with async_transaction() as session:
                client = await session.get_one(ApiClient, client_id)
            if rate is None:
                for first in range(0, count, SUBMIT_BATCH):
                    batch = range(min(SUBMIT_BATCH, count - first))
                    await asyncio.gather(*(group_commit().submit(job_type, {}, client=client) for _ in batch))
                return
            started, pending = time.monotonic(), []
            for i in range(count):
                await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
                pending.append(asyncio.create_task(group_commit().submit(job_type, {}, client=client)))
            await asyncio.gather(*pending)
        finally:
            await async_engine().dispose()

    asyncio.run(work())


def cpu_now(processes: dict[str, Process]) -> dict[str, float]:
    return {name: process.cpu_seconds() for name, process in processes.items()} | {"postgres": postgres_cpu_seconds()}


def cpu_since(before: dict[str, float], processes: dict[str, Process]) -> dict[str, float]:
    after = cpu_now(processes)
    return {name: after[name] - before[name] for name in before}


def timeline(since: dt.datetime) -> list[tuple[str, float, float]]:
    with database_connection() as db:
        return [(str(a), float(str(b)), float(str(c))) for a, b, c in db.execute(TIMELINE, (since,)).fetchall()]


def db_now() -> dt.datetime:
    with database_connection() as db:
        row = db.execute("SELECT now()").fetchone()
    assert row is not None
    assert isinstance(row[0], dt.datetime)
    return row[0]


@dataclass
class Roadie:
    """The platform's processes of the run and the bench client whose jobs' events they deliver."""

    relay: Process
    echo: Process
    hooks: Process
    client_id: uuid.UUID

    def stop(self) -> None:
        for process in (self.hooks, self.echo, self.relay):
            process.stop()


def start_roadie(bench: Bench, receiver: Receiver, secret: str, warmup: int) -> Roadie:
    """Register the endpoint, start the relay and the two workers, and run ``warmup`` jobs end to end."""
    roadie = Roadie(
        relay=bench.relay(),
        echo=bench.celery_worker("echo-worker", "workers.app"),
        hooks=bench.start("webhooks-worker", POOLS["webhooks"].command(node="webhooks-bench@%h")),
        client_id=register(receiver.url, secret),
    )
    print(f"roadie: warm-up, {warmup} echo jobs end to end")
    submit(roadie.client_id, warmup)
    receiver.wait_for(warmup, roadie.hooks)
    with database_connection() as db:
        wait_until(lambda: sql_count(db, DELIVERED) == warmup, timeout=60, what="warm-up deliveries")
    return roadie


def throughput(roadie: Roadie, receiver: Receiver, args: argparse.Namespace) -> tuple[Window, list[str]]:
    """The throughput window (relay held while the events are made, then t0) and what did not add up."""
    from roadie.jobs.outbox import relay_once

    print(f"roadie: throughput, {args.events} events made while the relay is held, then fanned out and delivered")
    roadie.relay.signal(signal.SIGSTOP)
    events_from = db_now()
    submit(roadie.client_id, args.events)
    while relay_once():  # the echo jobs' messages, published by this process while the relay is held
        pass
    total = args.warmup + args.events
    with database_connection() as db:
        wait_until(lambda: sql_count(db, SUCCEEDED) == total, timeout=TIMEOUT_S, what="echo jobs", process=roadie.echo)
        undispatched = sql_count(db, "SELECT count(*) FROM webhook_events WHERE dispatched_at IS NULL")
    if undispatched != args.events:
        raise RuntimeError(f"{undispatched} undispatched events, expected {args.events}")
    receiver.clear()
    delivery_side = {"relay": roadie.relay, "webhooks worker": roadie.hooks, "receiver": receiver.process}
    before = cpu_now(delivery_side)
    t0 = time.time()
    roadie.relay.signal(signal.SIGCONT)
    receiver.wait_for(args.events, roadie.hooks)
    with database_connection() as db:
        wait_until(
            lambda: sql_count(db, DELIVERED) == total, timeout=60, what="deliveries recorded", process=roadie.hooks
        )
        cpu_s = cpu_since(before, delivery_side)
        attempts = sql_count(db, "SELECT count(*) FROM webhook_attempts")
        rows = db.execute("SELECT latency_ms FROM webhook_attempts WHERE started_at >= %s", (events_from,)).fetchall()
    got, unverified = receiver.arrivals()
    last = max(at for times in got.values() for at in times)
    duplicates = sum(len(times) - 1 for times in got.values())
    print(f"  {len(got)} events received, {duplicates} duplicates, {unverified} unverified, {attempts} attempts")
    problems = []
    if attempts != total or unverified or len(got) != args.events:
        problems.append(f"roadie: {attempts} attempts for {total} deliveries, {len(got)} of {args.events} received")
    window = Window(args.events, last - t0, cpu_s, [float(str(row[0])) / 1000 for row in rows])
    return window, problems


def outcome_latency(roadie: Roadie, receiver: Receiver, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """Per paced job, outcome -> arrival at the receiver and outcome -> recorded delivered (s)."""
    print(f"roadie: latency, {args.latency_rate:g} echo jobs/s for {args.latency_seconds:g}s, everything running")
    receiver.clear()
    with database_connection() as db:
        delivered_before = sql_count(db, DELIVERED)
    latency_from = db_now()
    paced = round(args.latency_rate * args.latency_seconds)
    submit(roadie.client_id, paced, rate=args.latency_rate)
    receiver.wait_for(paced, roadie.hooks)
    with database_connection() as db:
        done = delivered_before + paced
        wait_until(lambda: sql_count(db, DELIVERED) == done, timeout=60, what="the paced deliveries")
    arrived, _ = receiver.arrivals()
    to_arrival, to_delivered = [], []
    for webhook_id, finished_at, delivered_at in timeline(latency_from):
        to_arrival.append(min(arrived[webhook_id]) - finished_at)
        to_delivered.append(delivered_at - finished_at)
    return to_arrival, to_delivered


def bodies_delivered(until: int) -> list[tuple[str, str]]:
    """(webhook-id, body) of the first ``until`` events, oldest first: what the baseline posts."""
    from models.webhooks import WebhookEvent
    from roadie.db import transaction
    from roadie.webhooks.delivery import envelope, message_id

    with transaction() as session:
        events = session.scalars(select(WebhookEvent).order_by(WebhookEvent.created_at).limit(until)).all()
        return [(message_id(event.id), envelope(event)) for event in events]


def run_baseline(bench: Bench, receiver: Receiver, bodies: list[tuple[str, str]], args: argparse.Namespace) -> Window:
    path = bench.log_dir / "bodies.json"
    path.write_text(json.dumps(bodies))
    receiver.clear()
    command = [
        sys.executable, "-m", "bench.webhook_loop", "--url", receiver.url, "--bodies", str(path),
        "--threads", str(POOLS["webhooks"].concurrency), "--warmup", str(args.warmup),
    ]  # fmt: skip
    receiver_before = receiver.process.cpu_seconds()
    loop = bench.start("baseline-loop", command, capture_stdout=True)
    assert loop.popen is not None
    out, _ = loop.popen.communicate(timeout=TIMEOUT_S)
    if loop.popen.returncode != 0:
        raise RuntimeError(f"the baseline loop failed:\n{loop.log_tail()}")
    result = json.loads(out)
    got, unverified = receiver.arrivals()
    if result["statuses"] != {"204": len(bodies) - args.warmup} or unverified or len(got) != len(bodies):
        raise RuntimeError(f"baseline: statuses {result['statuses']}, {unverified} unverified, {len(got)} received")
    measured = {webhook_id for webhook_id, _ in bodies[args.warmup :]}
    last = max(at for webhook_id, times in got.items() if webhook_id in measured for at in times)
    cpu_s = {"loop": float(result["cpu_s"]), "receiver": receiver.process.cpu_seconds() - receiver_before}
    return Window(len(measured), last - float(result["started_at"]), cpu_s, result["latencies_s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000, help="deliveries in the throughput window (default 1000)")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured deliveries first, per side (default 50)")
    parser.add_argument("--latency-rate", type=float, default=5.0, help="echo jobs/s in the latency phase (default 5)")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="latency phase length (default 20 s)")
    args = parser.parse_args()

    from cryptography.fernet import Fernet

    from roadie.webhooks.signing import new_secret

    secret = new_secret()
    os.environ.update(
        {
            "ROADIE_BENCH_WEBHOOK_SECRET": secret,
            "ROADIE_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
            "ROADIE_WEBHOOK_SECRET_KEYS": Fernet.generate_key().decode(),
        }
    )
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    with Bench() as bench:
        receiver = Receiver(bench)
        roadie = start_roadie(bench, receiver, secret, args.warmup)
        window, problems = throughput(roadie, receiver, args)
        to_arrival, to_delivered = outcome_latency(roadie, receiver, args)
        roadie.stop()
        bodies = bodies_delivered(args.warmup + args.events)
        print(f"baseline: the same {len(bodies)} bodies, signed and posted by 8 httpx threads ({args.warmup} warm-up)")
        baseline = run_baseline(bench, receiver, bodies, args)
        load_after = os.getloadavg()[0]
    steal = cpu_steal_percent(bench.cpu_times_before)

    w, b = window, baseline
    print_table(
        f"{args.events} webhook deliveries to a local receiver, 8 at a time",
        [
            Row("deliveries/s", w.per_second, b.per_second),
            Row("window (s)", w.seconds, b.seconds, 2),
            Row("POST p50 (ms)", percentile_ms(w.post_latencies_s, 50), percentile_ms(b.post_latencies_s, 50)),
            Row("POST p99 (ms)", percentile_ms(w.post_latencies_s, 99), percentile_ms(b.post_latencies_s, 99)),
            Row("sender CPU per delivery (us)", w.cpu_us("webhooks worker"), b.cpu_us("loop"), 0),
            Row("relay CPU per delivery (us)", w.cpu_us("relay"), 0, 0),
            Row("Postgres CPU per delivery (us)", w.cpu_us("postgres"), 0, 0),
            Row(
                "delivery side CPU per delivery (us)",
                w.cpu_us("webhooks worker", "relay", "postgres"),
                b.cpu_us("loop"),
                0,
            ),
            Row("receiver CPU per delivery (us)", w.cpu_us("receiver"), b.cpu_us("receiver"), 0),
        ],
    )
    paced = round(args.latency_rate * args.latency_seconds)
    print(
        f"\noutcome -> delivery, {paced} echo jobs at {args.latency_rate:g}/s: "
        f"received p50 {percentile_ms(to_arrival, 50):.0f} ms, p99 {percentile_ms(to_arrival, 99):.0f} ms, "
        f"max {1000 * max(to_arrival):.0f} ms; recorded delivered p50 {percentile_ms(to_delivered, 50):.0f} ms, "
        f"p99 {percentile_ms(to_delivered, 99):.0f} ms"
    )
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    ratio = w.per_second / b.per_second
    verdict = f"{ratio:.2f}x" if steal <= STEAL_LIMIT else f"no ratio: {steal:.1f} % CPU steal"
    print(
        f"\nsummary: Roadie {w.per_second:,.0f} deliveries/s vs a bare httpx loop {b.per_second:,.0f}/s: "
        f"{verdict} (goal >= 0.5x); outcome -> received p99 {percentile_ms(to_arrival, 99):.0f} ms (goal < 1000); "
        f"1-minute load average {load_after:.2f} at the end{' -- CHECKS FAILED' if problems else ''}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    run_main(main)
