"""End-to-end throughput of a no-op job through Roadie's ledger versus raw Celery.

    python -m bench.throughput [--jobs 2000]

Both sides use the same method and the same worker flags (ONE worker of the ``default`` pool as
``roadie.processes.POOLS`` defines it: ``--concurrency 2 --prefetch-multiplier 1 --without-gossip
--without-mingle --max-memory-per-child 400000``, late acks):

1. start the worker with an empty queue, wait until it answers a ``ping`` (start-up is excluded),
   then tell it to stop consuming ``default`` (remote control ``cancel_consumer``);
2. put the N jobs on the broker from this process (one producer connection; timed separately,
   not part of the result) and check the queue holds N messages;
3. t0: ``add_consumer default``; stop the clock when every job ran (polled every 20 ms).

Roadie: N ``platform.echo`` jobs with payload ``{}`` are accepted through the API's group commit
(``roadie.jobs.group_commit``: job row + outbox row + event, as ``POST /v1/jobs`` does, for a bench
API client) while no relay runs;
the relay's own publishing step (``roadie.jobs.outbox.relay_once``, 500 rows per transaction) then
drains the outbox onto the broker. Done when the ledger shows N finished jobs (all must succeed).
Baseline: N ``apply_async`` of bench/bare_app.py's no-op task, which INCRs a Redis counter;
done when the counter reaches N (and it must not overshoot).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.common import (
    Bench,
    Process,
    Row,
    broker,
    database_connection,
    flush_broker,
    postgres_cpu_seconds,
    print_table,
    run_main,
    sql_count,
    wait_until,
)

POLL_S = 0.02
TIMEOUT_S = 180.0
INSERT_BATCH = 200
QUEUE = "default"
FINISHED = "SELECT count(*) FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled')"


@dataclass(frozen=True)
class SideResult:
    jobs: int
    publish_s: float  # putting every job on the broker, before t0 (not part of the result)
    total_s: float  # t0 (add_consumer) until every job ran
    worker_cpu_s: float  # the worker's processes between t0 and the end
    postgres_cpu_s: float  # the database backends meanwhile

    @property
    def per_second(self) -> float:
        return self.jobs / self.total_s


def ready_and_paused(celery_app: Any, worker: Process) -> None:
    """Until the worker answers a broadcast ping, then stop it consuming ``default``."""
    wait_until(
        lambda: bool(celery_app.control.ping(timeout=0.5)),
        timeout=60,
        what=f"{worker.name} to answer ping",
        process=worker,
        every=0.0,
    )
    replies = celery_app.control.cancel_consumer(QUEUE, reply=True, timeout=5)
    if not replies:
        raise RuntimeError(f"{worker.name} did not confirm cancel_consumer:\n{worker.log_tail()}")


def timed(
    celery_app: Any, worker: Process, jobs: int, publish: Callable[[], None], done: Callable[[], bool]
) -> SideResult:
    """Publish while the worker is paused, then time from ``add_consumer`` until ``done``."""
    from workers.app import redis_queue_length

    started = time.perf_counter()
    publish()
    publish_s = time.perf_counter() - started
    with broker() as redis_client:
        queued = redis_queue_length(redis_client, QUEUE)
    if queued != jobs:
        raise RuntimeError(f"{queued} messages on {QUEUE!r} before t0, expected {jobs}")
    cpu_before, pg_before = worker.cpu_seconds(), postgres_cpu_seconds()
    t0 = time.perf_counter()
    celery_app.control.add_consumer(QUEUE, reply=False)
    wait_until(done, timeout=TIMEOUT_S, what="every job to run", process=worker, every=POLL_S)
    total_s = time.perf_counter() - t0
    cpu_s, pg_s = worker.cpu_seconds() - cpu_before, postgres_cpu_seconds() - pg_before
    return SideResult(queued, publish_s, total_s, cpu_s, pg_s)


def insert_jobs(count: int) -> None:
    """Accept ``count`` echo jobs through the API's group commit, ``INSERT_BATCH`` requests at a time."""
    from roadie import auth
    from roadie.db import async_engine, async_transaction
    from roadie.jobs.group_commit import group_commit
    from roadie.jobs.types import job_types

    job_type = job_types()["platform.echo"]

    async def work() -> None:
        try:
            async with async_transaction() as session:
                client, _ = await auth.create_client(session, "bench-throughput", ["jobs:write"])
            for first in range(0, count, INSERT_BATCH):
                requests = range(min(INSERT_BATCH, count - first))
                await asyncio.gather(*(group_commit().submit(job_type, {}, client=client) for _ in requests))
        finally:
            await async_engine().dispose()

    asyncio.run(work())


def run_roadie(bench: Bench, jobs: int) -> SideResult:
    from roadie.jobs.outbox import relay_once
    from workers.app import app

    insert_jobs(jobs)
    with database_connection() as db:
        assert sql_count(db, "SELECT count(*) FROM outbox") == jobs
        worker = bench.celery_worker("roadie-worker", "workers.app")
        ready_and_paused(app, worker)

        def publish() -> None:
            while relay_once():
                pass

        result = timed(app, worker, jobs, publish, lambda: sql_count(db, FINISHED) >= jobs)
        succeeded = sql_count(db, "SELECT count(*) FROM jobs WHERE status = 'succeeded'")
    worker.stop()
    if succeeded != jobs:
        raise RuntimeError(f"only {succeeded} of {jobs} Roadie jobs succeeded:\n{worker.log_tail()}")
    return result


def run_baseline(bench: Bench, jobs: int) -> SideResult:
    from bench.bare_app import DONE_KEY, celery_app, noop

    with broker() as redis_client:
        worker = bench.celery_worker("baseline-worker", "bench.bare_app:celery_app")
        ready_and_paused(celery_app, worker)

        def publish() -> None:
            with celery_app.producer_or_acquire() as producer:
                for _ in range(jobs):
                    noop.apply_async(producer=producer)

        def done() -> bool:
            return int(redis_client.get(DONE_KEY) or 0) >= jobs

        result = timed(celery_app, worker, jobs, publish, done)
        time.sleep(0.2)  # a duplicate delivery would show up as an overshoot
        ran = int(redis_client.get(DONE_KEY) or 0)
    worker.stop()
    if ran != jobs:
        raise RuntimeError(f"the no-op task ran {ran} times for {jobs} messages")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per side (default 2000)")
    args = parser.parse_args()

    with Bench() as bench:
        print(f"roadie: {args.jobs} platform.echo jobs through the ledger, ONE worker (concurrency 2, prefetch 1)")
        roadie = run_roadie(bench, args.jobs)
        flush_broker()
        print(f"baseline: {args.jobs} no-op tasks with apply_async, ONE worker (concurrency 2, prefetch 1)")
        baseline = run_baseline(bench, args.jobs)

    print_table(
        f"{args.jobs} no-op jobs end to end, one worker, concurrency 2, prefetch 1",
        [
            Row("jobs/s", roadie.per_second, baseline.per_second),
            Row("total time (s)", roadie.total_s, baseline.total_s, 2),
            Row("enqueue N before t0 (s, untimed)", roadie.publish_s, baseline.publish_s, 2),
            Row("ms per job (total / N)", 1000 * roadie.total_s / args.jobs, 1000 * baseline.total_s / args.jobs, 2),
            Row(
                "worker CPU per job (us)",
                1e6 * roadie.worker_cpu_s / args.jobs,
                1e6 * baseline.worker_cpu_s / args.jobs,
                0,
            ),
            Row("Postgres CPU per job (us)", 1e6 * roadie.postgres_cpu_s / args.jobs, 0, 0),
        ],
    )
    print(
        f"\nsummary: Roadie {roadie.per_second:,.0f} jobs/s vs raw Celery {baseline.per_second:,.0f} jobs/s "
        f"end to end ({roadie.per_second / baseline.per_second:.2f}x), {args.jobs} jobs, one worker"
    )
    return 0


if __name__ == "__main__":
    run_main(main)
