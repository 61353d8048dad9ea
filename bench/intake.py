"""Intake benchmark: ``POST /v1/jobs`` of Roadie's API versus a bare Starlette + ``apply_async`` app.

    python -m bench.intake [--seconds 15] [--concurrency 32] [--client raw|httpx] [--quotas]

Each app is served by one uvicorn process (same flags), one at a time, and loaded by a separate
load generator process (bench/loadgen.py) with 32 keep-alive clients: 2 s warm-up, then the
measured window. Roadie runs with its outbox relay (as in production) and no workers; afterwards
the ledger must hold exactly one job per 202 and the broker one message per job. The baseline
must leave one broker message per 202.

With ``--quotas`` both sides are Roadie: quotas off (the baseline), then on, with per-minute and
per-day quotas no run reaches, so every request is also counted in Redis by ``limits``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.common import (
    Bench,
    LatencyStats,
    Row,
    broker,
    database_connection,
    flush_broker,
    free_port,
    postgres_cpu_seconds,
    print_table,
    run_main,
    server_cpu_seconds,
    sql_count,
    summarize,
    wait_port,
    wait_until,
)

REQUEST_BODY = json.dumps({"type": "platform.echo", "payload": {}})


@dataclass(frozen=True)
class SideResult:
    stats: LatencyStats
    accepted: int  # every 202, warm-up and tail included
    rejected: int  # other statuses and connection errors
    server_cpu_percent: float
    server_cpu_s: float  # the API process(es), warm-up included, like ``accepted``
    postgres_cpu_s: float  # the database backends meanwhile (the relay's included)
    loadgen_cpu_percent: float
    loadgen: dict[str, Any]


def load(bench: Bench, name: str, app: str, headers: list[str], args: argparse.Namespace) -> SideResult:
    """Serve ``app`` with uvicorn and drive it with the load generator; stop the server afterwards."""
    port = free_port()
    server = bench.uvicorn(f"{name}-api", app, port, workers=args.workers)
    wait_port(port, server)
    command = [
        sys.executable, "-m", "bench.loadgen", "--url", f"http://127.0.0.1:{port}/v1/jobs", "--body", REQUEST_BODY,
        "--concurrency", str(args.concurrency), "--warmup", str(args.warmup), "--seconds", str(args.seconds),
        "--client", args.client, *(part for header in headers for part in ("--header", header)),
    ]  # fmt: skip
    cpu_before, pg_before, started = server.cpu_seconds(), postgres_cpu_seconds(), time.monotonic()
    loadgen = bench.start(f"{name}-loadgen", command, capture_stdout=True)
    assert loadgen.popen is not None
    out, _ = loadgen.popen.communicate(timeout=args.warmup + args.seconds + 60)
    server_cpu_s, postgres_cpu_s = server.cpu_seconds() - cpu_before, postgres_cpu_seconds() - pg_before
    server_cpu = 100 * server_cpu_s / (time.monotonic() - started)
    if loadgen.popen.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{loadgen.log_tail()}")
    result: dict[str, Any] = json.loads(out)
    if result["sample_rejection"] or result["errors"]:
        print(f"  {name}: statuses {result['statuses']}, errors {result['errors']}, e.g. {result['sample_rejection']}")
    if len(result["latencies_s"]) < 2:
        raise RuntimeError(f"{name}: no successful requests measured:\n{server.log_tail()}")
    loadgen.stop()
    if not server.alive:
        raise RuntimeError(f"{name} API died:\n{server.log_tail()}")
    server.stop()
    statuses: dict[str, int] = result["statuses"]
    accepted = statuses.get("202", 0)
    rejected = sum(v for k, v in statuses.items() if k != "202") + sum(result["errors"].values())
    return SideResult(
        stats=summarize(result["latencies_s"], args.seconds),
        accepted=accepted,
        rejected=rejected,
        server_cpu_percent=server_cpu,
        server_cpu_s=server_cpu_s,
        postgres_cpu_s=postgres_cpu_s,
        loadgen_cpu_percent=float(result["cpu_percent"]),
        loadgen={k: v for k, v in result.items() if k != "latencies_s"},
    )


def per_request(cpu_s: float, side: SideResult) -> float:
    return 1e6 * cpu_s / side.accepted if side.accepted else 0.0


@dataclass(frozen=True)
class RoadieRun:
    """A Roadie side: the load's result, its relay's CPU, and the books checked afterwards."""

    side: SideResult
    relay_cpu_s: float
    relay_cpu_percent: float
    backlog: int
    drain_s: float
    ledger_jobs: int
    queued: int


def roadie_run(bench: Bench, name: str, headers: list[str], args: argparse.Namespace, problems: list[str]) -> RoadieRun:
    """Roadie's API and relay under the load, then the books: one job per 202, one broker message per job."""
    from workers.app import redis_queue_length

    relay = bench.relay()
    print(
        f"{name}: api.app:app ({args.workers} uvicorn worker(s)) + relay, {args.concurrency} clients, "
        f"{args.warmup:g}s warm-up + {args.seconds:g}s"
    )
    relay_cpu_before, relay_started = relay.cpu_seconds(), time.monotonic()
    side = load(bench, name, "api.app:app", headers, args)
    relay_cpu_s = relay.cpu_seconds() - relay_cpu_before
    relay_cpu = 100 * relay_cpu_s / (time.monotonic() - relay_started)
    with database_connection() as db, broker() as redis_client:
        backlog = sql_count(db, "SELECT count(*) FROM outbox")
        drain_started = time.monotonic()
        wait_until(
            lambda: sql_count(db, "SELECT count(*) FROM outbox") == 0,
            timeout=60,
            what="the relay to drain the outbox",
            process=relay,
        )
        drain_s = time.monotonic() - drain_started if backlog else 0.0
        ledger_jobs = sql_count(db, "SELECT count(*) FROM jobs")
        queued = redis_queue_length(redis_client, "default")
    relay.stop()
    if ledger_jobs != side.accepted:
        problems.append(f"{name}: {ledger_jobs} jobs in the ledger but {side.accepted} responses were 202")
    if queued != ledger_jobs:
        problems.append(f"{name}: {queued} messages on the broker for {ledger_jobs} jobs")
    return RoadieRun(side, relay_cpu_s, relay_cpu, backlog, drain_s, ledger_jobs, queued)


def forget_jobs() -> None:
    """An empty ledger and broker between two Roadie runs, so each one's books are checked alone."""
    with database_connection() as db:
        db.execute("TRUNCATE jobs CASCADE")
    flush_broker()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per side (default 15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured warm-up per side (default 2)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw", help="load generator's HTTP client")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes, for both sides (default 1)")
    parser.add_argument(
        "--quotas",
        action="store_true",
        help="compare Roadie with per-client quotas on (never reached) against Roadie with them off",
    )
    args = parser.parse_args()
    problems: list[str] = []

    with Bench() as bench:
        from bench.common import create_api_key

        headers = [f"Authorization: Bearer {create_api_key()}"]
        if args.quotas:
            return quotas_main(bench, headers, args, problems)
        run = roadie_run(bench, "roadie", headers, args, problems)
        roadie = run.side
        flush_broker()
        print(
            f"baseline: bench.bare_app:app ({args.workers} uvicorn worker(s)), {args.concurrency} clients, "
            f"{args.warmup:g}s warm-up + {args.seconds:g}s"
        )
        baseline = load(bench, "baseline", "bench.bare_app:app", headers, args)
        from workers.app import redis_queue_length

        with broker() as redis_client:
            baseline_queued = redis_queue_length(redis_client, "default")
        if baseline_queued != baseline.accepted:
            problems.append(f"baseline: {baseline_queued} messages on the broker but {baseline.accepted} 202s")

    print_table(
        f"POST /v1/jobs, {args.concurrency} clients, {args.seconds:g}s window ({roadie.loadgen['client']} client)",
        [
            Row("requests/s", roadie.stats.per_second, baseline.stats.per_second),
            Row("p50 latency (ms)", roadie.stats.p50_ms, baseline.stats.p50_ms, 2),
            Row("p99 latency (ms)", roadie.stats.p99_ms, baseline.stats.p99_ms, 2),
            Row("202 responses (all)", roadie.accepted, baseline.accepted, 0),
            Row("other responses/errors", roadie.rejected, baseline.rejected, 0),
            Row("API process CPU (%)", roadie.server_cpu_percent, baseline.server_cpu_percent, 0),
            Row("relay process CPU (%)", run.relay_cpu_percent, 0, 0),
            Row("load generator CPU (%)", roadie.loadgen_cpu_percent, baseline.loadgen_cpu_percent, 0),
            Row(
                "API CPU per 202 (us)",
                per_request(roadie.server_cpu_s, roadie),
                per_request(baseline.server_cpu_s, baseline),
                0,
            ),
            Row("relay CPU per 202 (us)", per_request(run.relay_cpu_s, roadie), 0, 0),
            Row("Postgres CPU per 202 (us)", per_request(roadie.postgres_cpu_s, roadie), 0, 0),
        ],
    )
    print_books(run)
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    ratio = roadie.stats.per_second / baseline.stats.per_second
    print(
        f"\nsummary: Roadie intake {roadie.stats.per_second:,.0f} req/s (p99 {roadie.stats.p99_ms:.1f} ms) vs "
        f"bare Starlette+apply_async {baseline.stats.per_second:,.0f} req/s (p99 {baseline.stats.p99_ms:.1f} ms): "
        f"{ratio:.2f}x{'' if not problems else ' -- CHECKS FAILED'}"
    )
    return 1 if problems else 0


def print_books(run: RoadieRun) -> None:
    print(
        f"\nledger check: {run.ledger_jobs} jobs in the ledger, {run.side.accepted} 202s, "
        f"{run.queued} broker messages; "
        f"outbox backlog when the load stopped: {run.backlog} rows, drained in {run.drain_s:.2f}s"
    )


#: Quotas that count every request and are never reached in a run.
UNREACHED_QUOTAS = {"ROADIE_CLIENT_JOBS_PER_MINUTE": "1000000000", "ROADIE_CLIENT_JOBS_PER_DAY": "1000000000"}


def quotas_main(bench: Bench, headers: list[str], args: argparse.Namespace, problems: list[str]) -> int:
    """Roadie with quotas off (the baseline), then on: each request is also counted in Redis."""
    off = roadie_run(bench, "quotas-off", headers, args, problems)
    forget_jobs()
    os.environ.update(UNREACHED_QUOTAS)  # the next API processes count every request against a quota
    try:
        redis_before = server_cpu_seconds("redis-server")
        on = roadie_run(bench, "quotas-on", headers, args, problems)
        redis_on_s = server_cpu_seconds("redis-server") - redis_before
    finally:
        for name in UNREACHED_QUOTAS:
            os.environ.pop(name)
    print_table(
        f"POST /v1/jobs, quotas on (roadie) vs off (baseline), {args.concurrency} clients, {args.seconds:g}s window",
        [
            Row("requests/s", on.side.stats.per_second, off.side.stats.per_second),
            Row("p50 latency (ms)", on.side.stats.p50_ms, off.side.stats.p50_ms, 2),
            Row("p99 latency (ms)", on.side.stats.p99_ms, off.side.stats.p99_ms, 2),
            Row("other responses/errors", on.side.rejected, off.side.rejected, 0),
            Row(
                "API CPU per 202 (us)",
                per_request(on.side.server_cpu_s, on.side),
                per_request(off.side.server_cpu_s, off.side),
                0,
            ),
            Row(
                "relay CPU per 202 (us)",
                per_request(on.relay_cpu_s, on.side),
                per_request(off.relay_cpu_s, off.side),
                0,
            ),
            Row(
                "Postgres CPU per 202 (us)",
                per_request(on.side.postgres_cpu_s, on.side),
                per_request(off.side.postgres_cpu_s, off.side),
                0,
            ),
            Row("Redis CPU per 202, quotas on (us)", per_request(redis_on_s, on.side), 0, 0),
        ],
    )
    print_books(on)
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    run_main(main)
