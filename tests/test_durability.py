"""Nothing lost, nothing twice: jobs survive killed workers and a flushed broker.

These tests stop the shared worker and run their own, so they can kill them.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import psutil
import pytest
import redis
from sqlalchemy import select, text

from models.platform import JobAttempt
from roadie.db import transaction
from roadie.jobs.outbox import reap_lost, republish_stale
from tests.conftest import ON_REDIS, Processes, free_port
from tests.helpers import metric_samples, metric_value, submit, wait_for_job


def outcomes(job_id: str) -> list[str]:
    with transaction() as session:
        return list(
            session.scalars(select(JobAttempt.outcome).where(JobAttempt.job_id == job_id).order_by(JobAttempt.number))
        )


def wait_until(condition: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_a_sigkilled_worker_s_job_is_reaped_and_completes_exactly_once(
    client: httpx.Client, own_workers: Processes
) -> None:
    doomed = own_workers.worker()
    job = submit(client, {"sleep_ms": 3000, "marker": "killed"})
    wait_for_job(client, job["id"], "running")

    doomed.kill()  # the main process and its pool child, with no chance to clean up
    time.sleep(3.5)  # > ROADIE_HEARTBEAT_TIMEOUT_S: the beat has stopped
    assert reap_lost() == 1
    own_workers.worker()

    job = wait_for_job(client, job["id"], "succeeded", timeout=30)
    assert job["result"] == {"sleep_ms": 3000, "marker": "killed"}
    assert job["attempts"] == 2
    assert outcomes(job["id"]) == ["lost", "succeeded"]


def test_a_sigkilled_pool_child_s_job_is_redelivered_and_completes_exactly_once(
    client: httpx.Client, own_workers: Processes
) -> None:
    survivor = own_workers.worker()
    job = submit(client, {"sleep_ms": 2000})
    wait_for_job(client, job["id"], "running")

    (child,) = psutil.Process(survivor.pid).children()
    os.kill(child.pid, signal.SIGKILL)  # acks_late + reject_on_worker_lost puts the message back

    job = wait_for_job(client, job["id"], "succeeded", timeout=30)
    assert job["attempts"] == 2
    assert outcomes(job["id"]) == ["lost", "succeeded"]


@pytest.mark.skipif(
    not ON_REDIS,
    reason="flushes Redis: on RabbitMQ published messages sit in durable queues; the sweeper test needs Redis",
)
def test_a_job_is_not_lost_when_redis_is_flushed_after_it_was_accepted(
    client: httpx.Client, own_workers: Processes, broker: redis.Redis
) -> None:
    from workers.app import redis_queue_length

    job = submit(client, {"marker": "survives the flush"})
    wait_until(lambda: redis_queue_length(broker, "default") == 1)  # the relay published it

    broker.flushdb()  # what a Redis restart without persistence does
    time.sleep(1.2)  # > ROADIE_REPUBLISH_AFTER_S
    assert republish_stale() == 1
    own_workers.worker()

    job = wait_for_job(client, job["id"], "succeeded", timeout=30)
    assert job["result"] == {"marker": "survives the flush"}
    assert job["attempts"] == 1


def test_a_job_whose_worker_keeps_dying_fails_after_the_maximum_deliveries(
    client: httpx.Client, own_workers: Processes
) -> None:
    job = submit(client, {"sleep_ms": 60_000})
    for _ in range(3):  # ROADIE_MAX_DELIVERIES
        doomed = own_workers.worker()
        wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running")
        doomed.kill()
        time.sleep(3.5)
        assert reap_lost() == 1

    job = client.get(f"/v1/jobs/{job['id']}").json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "worker_lost"
    assert outcomes(job["id"]) == ["lost", "lost", "lost"]


def dropped(port: int, reason: str) -> float:
    """The worker's count of echo deliveries dropped for ``reason``."""
    samples = metric_samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
    return metric_value(samples, "roadie_job_deliveries_dropped_total", type="platform.echo", reason=reason)


def test_a_duplicate_delivery_of_a_finished_job_is_dropped_and_counted_as_one(
    client: httpx.Client, own_workers: Processes
) -> None:
    from workers.app import app

    port = free_port()
    worker = own_workers.worker(env={"ROADIE_WORKER_METRICS_PORT": str(port)})
    job = wait_for_job(client, submit(client, {"n": 1})["id"], "succeeded")

    app.send_task("platform.echo", args=[job["id"]], task_id=f"{job['id']}.duplicate", queue="default")
    follow_up = wait_for_job(client, submit(client, {"n": 2})["id"], "succeeded")  # the worker got past it

    assert follow_up["status"] == "succeeded"
    assert client.get(f"/v1/jobs/{job['id']}").json()["attempts"] == 1
    assert (dropped(port, "duplicate"), dropped(port, "lease_lost")) == (1, 0)
    assert '"job.duplicate_delivery"' in worker.log()


def test_a_stalled_worker_s_late_outcome_is_refused_and_counted_as_a_lost_lease(
    client: httpx.Client, own_workers: Processes
) -> None:
    port = free_port()
    stalled = own_workers.worker(env={"ROADIE_WORKER_METRICS_PORT": str(port)})
    job = submit(client, {"sleep_ms": 3000, "by": "whoever holds the lease"})
    wait_for_job(client, job["id"], "running", timeout=60)

    stalled.signal(signal.SIGSTOP)  # frozen: to the rest of the platform, as good as cut off
    time.sleep(3.5)  # > ROADIE_HEARTBEAT_TIMEOUT_S
    assert reap_lost() == 1
    own_workers.worker()
    wait_for_job(client, job["id"], "succeeded", timeout=30)
    stalled.signal(signal.SIGCONT)  # it finishes its run and tries to record it
    wait_until(lambda: '"job.outcome_refused_lease_lost"' in stalled.log(), timeout=30)

    assert outcomes(job["id"]) == ["lost", "succeeded"]
    assert client.get(f"/v1/jobs/{job['id']}").json()["attempts"] == 2
    assert (dropped(port, "lease_lost"), dropped(port, "duplicate")) == (1, 0)
    assert '"job.succeeded"' not in stalled.log()


@pytest.mark.usefixtures("worker")
def test_the_relay_carries_on_after_its_database_connection_is_dropped(client: httpx.Client) -> None:
    with transaction() as session:
        dropped = session.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
        ).scalar_one()
    assert dropped == 1

    job = wait_for_job(client, submit(client, {"after": "reconnect"})["id"], "succeeded", timeout=90)

    assert job["result"] == {"after": "reconnect"}
