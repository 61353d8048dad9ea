"""Retention's purge of N finished jobs versus one hand-written DELETE of the same jobs.

    python -m bench.retention [--jobs 1000000]

Each side gets the same freshly seeded ledger: N finished jobs 40 days old (a third each succeeded,
failed and cancelled; each with one attempt and two events), and 10,000 recent ones that stay.

Baseline: ONE ``DELETE FROM jobs WHERE status IN (...) AND finished_at < cutoff`` (the foreign keys
cascade to the attempts and events), in one transaction: the fewest statements, and every row
lock held until the end. Roadie: ``roadie.jobs.retention.purge_finished_jobs()`` with no time
budget: batches of 1,000, each its own transaction, checking per job what keeps it (a payout, a
track, a live Idempotency-Key, an unfinished child).

While each side runs, two probes each run a statement every 10 ms on connections of their own: what
intake does (insert a job and its outbox row), and what an admin re-running an old failed job does
first (lock that job's row; a random one of the jobs being purged). Printed: jobs/s, the longest
transaction (the longest any row lock was held), the probes' p99 and worst latency, and the CPU per
purged job of the Postgres backends that purged (the probes' own backends left out).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence

import psutil
import psycopg

from bench.common import (
    Row,
    configure_environment,
    cpu_steal_percent,
    database_connection,
    postgres_cpu_seconds,
    print_table,
    run_main,
    scratch_database,
)

RECENT = 10_000
SEED = (
    "TRUNCATE jobs CASCADE",
    """
    INSERT INTO jobs (id, type, queue, payload, status, attempts, run_attempts, max_attempts, progress_percent,
                      cancel_requested, publish_count, created_at, finished_at)
    SELECT gen_random_uuid(), 'platform.echo', 'default', '{}',
           (ARRAY['succeeded', 'failed', 'cancelled'])[1 + mod(g, 3)], 1, 1, 5, 100, false, 1,
           now() - interval '40 days' + g * interval '1 ms', now() - interval '40 days' + g * interval '1 ms'
    FROM generate_series(1, CAST(%(jobs)s AS bigint)) AS g
    """,
    """
    INSERT INTO jobs (id, type, queue, payload, status, attempts, run_attempts, max_attempts, progress_percent,
                      cancel_requested, publish_count, created_at, finished_at)
    SELECT gen_random_uuid(), 'platform.echo', 'default', '{}', 'succeeded', 1, 1, 5, 100, false, 1,
           now() - g * interval '1 s', now() - g * interval '1 s'
    FROM generate_series(1, CAST(%(recent)s AS bigint)) AS g
    """,
    """
    INSERT INTO job_attempts (job_id, number, lease_id, worker, outcome, started_at, finished_at)
    SELECT id, 1, gen_random_uuid(), 'bench@host', status, created_at, finished_at FROM jobs
    """,
    "INSERT INTO job_events (job_id, kind, created_at) SELECT id, 'created', created_at FROM jobs",
    "INSERT INTO job_events (job_id, kind, created_at) SELECT id, 'finished', finished_at FROM jobs",
    "VACUUM ANALYZE jobs, job_attempts, job_events",
)

BARE = "DELETE FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at < %(cutoff)s"

INTAKE = """
WITH job AS (
    INSERT INTO jobs (id, type, queue, payload, status, attempts, run_attempts, max_attempts, progress_percent,
                      cancel_requested, publish_count)
    VALUES (gen_random_uuid(), 'platform.echo', 'default', '{}', 'queued', 0, 0, 5, 0, false, 0) RETURNING id
)
INSERT INTO outbox (job_id) SELECT id FROM job
"""
LOCK_OLD = "SELECT id FROM jobs WHERE id = %(id)s FOR UPDATE"
SAMPLE = "SELECT id FROM jobs WHERE created_at < now() - interval '30 days' ORDER BY random() LIMIT 2000"


class Probe(threading.Thread):
    """One statement every ``period_s`` on a connection of its own, each latency recorded."""

    def __init__(self, statement: str, ids: Sequence[object] = (), period_s: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.statement, self.ids, self.period_s = statement, ids, period_s
        self.latencies: list[float] = []
        self.stopping, self.connected = threading.Event(), threading.Event()
        self.backend_pid = 0

    def run(self) -> None:
        with database_connection() as connection:
            self.backend_pid = connection.info.backend_pid
            self.connected.set()
            for n in itertools.count():
                if self.stopping.is_set():
                    break
                began = time.perf_counter()
                connection.execute(self.statement, {"id": self.ids[n % len(self.ids)]} if self.ids else None)
                self.latencies.append(time.perf_counter() - began)
                self.stopping.wait(self.period_s)

    def stop(self) -> tuple[float, float]:
        """p99 and worst latency, in ms."""
        self.stopping.set()
        self.join()
        cuts = (
            statistics.quantiles(self.latencies, n=100, method="inclusive")
            if len(self.latencies) > 1
            else self.latencies * 99
        )
        return cuts[98] * 1000, max(self.latencies) * 1000


def seed(jobs: int) -> None:
    with database_connection() as connection:
        for statement in SEED:
            connection.execute(statement, {"jobs": jobs, "recent": RECENT} if "%(" in statement else None)


def measured(purge: Callable[[], tuple[int, float]]) -> dict[str, float]:
    """Run ``purge`` (returns jobs purged and its longest transaction) with both probes going."""
    with database_connection() as connection:
        old_ids = [row[0] for row in connection.execute(SAMPLE)]
    probes = [Probe(INTAKE), Probe(LOCK_OLD, old_ids)]
    for probe in probes:
        probe.start()
        probe.connected.wait()
    probe_pids = {probe.backend_pid for probe in probes}
    time.sleep(0.5)
    cpu_before = postgres_cpu_seconds(exclude=probe_pids)
    began = time.perf_counter()
    purged, longest_s = purge()
    seconds = time.perf_counter() - began
    cpu = postgres_cpu_seconds(exclude=probe_pids) - cpu_before
    (intake_p99, intake_max), (rerun_p99, rerun_max) = (probe.stop() for probe in probes)
    return {
        "purged": purged,
        "seconds": seconds,
        "longest_s": longest_s,
        "intake_p99": intake_p99,
        "intake_max": intake_max,
        "lock_p99": rerun_p99,
        "lock_max": rerun_max,
        "pg_cpu_us": cpu / purged * 1e6 if purged else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    args = parser.parse_args()
    configure_environment()
    print(f"{os.cpu_count()} CPUs, 1-minute load average {os.getloadavg()[0]:.2f} before the run")
    cpu_times_before = psutil.cpu_times()
    with scratch_database():
        import datetime as dt

        from roadie.jobs.retention import purge_finished_jobs
        from roadie.settings import get_settings

        def bare(connection: psycopg.Connection[tuple[object, ...]]) -> tuple[int, float]:
            cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=get_settings().job_retention_days)
            began = time.perf_counter()
            with connection.transaction():
                deleted = connection.execute(BARE, {"cutoff": cutoff}).rowcount
            return deleted, time.perf_counter() - began

        def roadie() -> tuple[int, float]:
            result = purge_finished_jobs(budget_s=float("inf"))
            return result.jobs, result.longest_transaction_s

        results = {}
        with database_connection() as baseline_connection:  # connected before the CPU is first read
            for name, purge in (("baseline", lambda: bare(baseline_connection)), ("roadie", roadie)):
                began = time.perf_counter()
                seed(args.jobs)
                seconds = time.perf_counter() - began
                print(f"{name}: seeded {args.jobs:,} old and {RECENT:,} recent jobs in {seconds:.0f} s")
                results[name] = measured(purge)
                old = "SELECT count(*) FROM jobs WHERE created_at < now() - interval '30 days'"
                assert baseline_connection.execute(old).fetchone() == (0,), f"{name} left old jobs"
                assert results[name]["purged"] == args.jobs, results[name]
        ours, theirs = results["roadie"], results["baseline"]
        print_table(
            f"purging {args.jobs:,} finished jobs (with {args.jobs * 3:,} attempts and events)",
            [
                Row("jobs/s", ours["purged"] / ours["seconds"], theirs["purged"] / theirs["seconds"], 0),
                Row("seconds", ours["seconds"], theirs["seconds"], 1),
                Row("longest transaction (s)", ours["longest_s"], theirs["longest_s"], 3),
                Row("intake probe p99 (ms)", ours["intake_p99"], theirs["intake_p99"], 1),
                Row("intake probe worst (ms)", ours["intake_max"], theirs["intake_max"], 1),
                Row("old-row lock probe p99 (ms)", ours["lock_p99"], theirs["lock_p99"], 1),
                Row("old-row lock probe worst (ms)", ours["lock_max"], theirs["lock_max"], 1),
                Row("Postgres CPU per job (µs)", ours["pg_cpu_us"], theirs["pg_cpu_us"], 1),
            ],
        )
    print(f"CPU stolen by the hypervisor during the run: {cpu_steal_percent(cpu_times_before):.1f} %")
    return 0


if __name__ == "__main__":
    run_main(main)
