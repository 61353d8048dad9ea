"""Housekeeping runs inside beat's own process, so a backlog of jobs cannot delay the reaper that rescues them."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import func, select

from models.platform import Job, JobEvent
from roadie.db import transaction
from roadie.jobs.creation import enqueue
from roadie.jobs.types import job_types
from roadie.processes import ProcessGroup, beat_command
from roadie.settings import get_settings
from tests.conftest import ROOT, Processes
from tests.helpers import submit, wait_for_job

REAPER_PERIOD_S = 2.0
BACKLOG = 1000


def reaped(job_ids: list[str]) -> int:
    with transaction() as session:
        return (
            session.scalar(
                select(func.count(func.distinct(JobEvent.job_id))).where(
                    JobEvent.kind == "reaped", JobEvent.job_id.in_([uuid.UUID(j) for j in job_ids])
                )
            )
            or 0
        )


def test_a_sigkilled_worker_s_jobs_are_requeued_within_the_heartbeat_timeout_and_one_reaper_period_behind_a_backlog(
    client: httpx.Client, own_workers: Processes, tmp_path: Path
) -> None:
    env = dict(os.environ, ROADIE_SCHEDULE_REAP_LOST_JOBS=f"every {REAPER_PERIOD_S:g}s")
    beat = ProcessGroup("beat", beat_command(tmp_path / "schedule"), tmp_path / "beat.log", env, ROOT)
    beat.start()
    try:
        doomed = own_workers.worker(queues="default", concurrency=2)
        running = [submit(client, {"sleep_ms": 600_000, "n": n})["id"] for n in range(2)]
        for job_id in running:
            wait_for_job(client, job_id, "running", timeout=60)
        with transaction() as session:  # slow jobs queued behind them on the same `default` queue
            for n in range(BACKLOG):
                enqueue(session, job_types()["platform.echo"], {"sleep_ms": 600_000, "backlog": n}, actor="test")
        deadline = time.monotonic() + 60
        while "beat: Starting" not in beat.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(REAPER_PERIOD_S)  # its reaper has run at least once: the running jobs are beating
        assert reaped(running) == 0

        doomed.kill()
        killed_at = time.monotonic()
        bound = get_settings().heartbeat_timeout_s + REAPER_PERIOD_S
        while reaped(running) < len(running) and time.monotonic() - killed_at < bound + 5:
            time.sleep(0.1)

        elapsed = time.monotonic() - killed_at
        assert reaped(running) == len(running), beat.log_tail()
        assert elapsed <= bound + 1, f"re-queued {elapsed:.1f}s after the kill, more than {bound:g}s + 1s"
        with transaction() as session:
            assert session.scalar(select(func.count()).where(Job.status == "queued")) == BACKLOG + len(running)
    finally:
        beat.stop()
    assert "platform.reap_lost_jobs" not in beat.log()  # nothing was sent to a queue for it
