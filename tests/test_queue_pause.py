"""Pausing a queue or a job type: nothing new starts, intake still accepts, nothing is lost, each job runs once.

Real API, relay and Celery worker: a pause under load holds what was published before it (the worker gives
those jobs back) and what arrives during it (the relay holds them); a worker restarted while paused starts
nothing; resuming runs every job exactly once.
"""

from __future__ import annotations

import datetime as dt
import uuid

import httpx
from click.testing import CliRunner
from sqlalchemy import func, select

from models.controls import ControlEvent
from models.platform import Job, JobAttempt
from roadie.cli import main
from roadie.db import transaction
from roadie.processes import ProcessGroup
from tests.helpers import metric_samples, metric_value, submit
from tests.test_durability import wait_until

LOAD = 40


def started_between(job_ids: list[str], start: dt.datetime, end: dt.datetime) -> list[uuid.UUID]:
    with transaction() as session:
        return list(
            session.scalars(
                select(JobAttempt.job_id).where(
                    JobAttempt.job_id.in_([uuid.UUID(i) for i in job_ids]),
                    JobAttempt.started_at > start,
                    JobAttempt.started_at < end,
                )
            )
        )


def statuses(job_ids: list[str]) -> dict[str, int]:
    with transaction() as session:
        rows = session.execute(
            select(Job.status, func.count()).where(Job.id.in_([uuid.UUID(i) for i in job_ids])).group_by(Job.status)
        )
        return dict(rows.tuples().all())


def queue_state(admin: httpx.Client, name: str, kind: str = "queue") -> dict[str, object]:
    listed = admin.get("/v1/admin/queues")
    assert listed.status_code == 200, listed.text
    return next(q for q in listed.json()["queues"] if q["kind"] == kind and q["name"] == name)


def test_a_queue_paused_under_load_starts_nothing_survives_a_worker_restart_and_resumes_every_job_once(
    admin: httpx.Client, client: httpx.Client, worker: ProcessGroup, api_url: str
) -> None:
    job_ids = [submit(client, {"sleep_ms": 50, "n": n})["id"] for n in range(LOAD)]
    paused = admin.post("/v1/admin/queues/default/pause", json={"reason": "rehearsing an incident"})
    assert paused.status_code == 200, paused.text
    paused_at = dt.datetime.now(dt.UTC)
    who = paused.json()["paused_by"]
    assert who.startswith("ops-")
    assert paused.json() | {"held": 0, "running": 0, "paused_at": None} == {
        "kind": "queue",
        "name": "default",
        "paused": True,
        "paused_by": who,
        "paused_at": None,
        "reason": "rehearsing an incident",
        "held": 0,
        "running": 0,
    }
    # Intake still accepts while paused; these jobs wait in the ledger.
    job_ids += [submit(client, {"sleep_ms": 50, "n": LOAD + n})["id"] for n in range(LOAD)]

    wait_until(lambda: queue_state(admin, "default")["running"] == 0, timeout=30)  # running jobs finish
    worker.stop()
    worker.start()  # the pause is in the database: a restarted worker starts nothing of it either
    # What the relay published before the pause, the worker gives back: then the ledger holds every waiting job.
    wait_until(lambda: queue_state(admin, "default")["held"] == statuses(job_ids).get("queued"), timeout=60)
    waiting = statuses(job_ids)["queued"]
    assert waiting >= LOAD  # at least the jobs submitted during the pause
    metrics = metric_samples(httpx.get(f"{api_url}/metrics").text)
    assert metric_value(metrics, "roadie_queue_paused", queue="default") == 1
    assert metric_value(metrics, "roadie_queue_paused", queue="media") == 0
    assert metric_value(metrics, "roadie_held_jobs", kind="queue", target="default") == waiting

    resumed = admin.post("/v1/admin/queues/default/resume")
    assert resumed.status_code == 200, resumed.text
    resumed_at = dt.datetime.now(dt.UTC)
    assert resumed.json()["paused"] is False
    assert started_between(job_ids, paused_at, resumed_at) == []  # nothing started while paused

    wait_until(lambda: statuses(job_ids) == {"succeeded": 2 * LOAD}, timeout=120)
    with transaction() as session:
        attempts = session.scalars(
            select(func.count()).select_from(JobAttempt).where(JobAttempt.job_id.in_([uuid.UUID(i) for i in job_ids]))
        ).one()
        audit = session.execute(
            select(ControlEvent.action, ControlEvent.actor)
            .where(ControlEvent.target == "default")
            .order_by(ControlEvent.id)
        ).all()
    assert attempts == 2 * LOAD  # every job ran exactly once
    assert [tuple(row) for row in audit] == [("pause", who), ("resume", who)]


def test_a_paused_job_type_holds_only_its_jobs(admin: httpx.Client, client: httpx.Client, worker: ProcessGroup) -> None:
    assert admin.post("/v1/admin/job-types/platform.echo/pause").status_code == 200
    held = [submit(client, {"n": n})["id"] for n in range(3)]
    wait_until(lambda: queue_state(admin, "platform.echo", "type")["held"] == 3, timeout=15)
    assert queue_state(admin, "default")["paused"] is False
    assert statuses(held) == {"queued": 3}
    assert admin.post("/v1/admin/job-types/platform.echo/resume").json()["held"] == 0
    wait_until(lambda: statuses(held) == {"succeeded": 3}, timeout=30)


def test_unknown_queues_and_job_types_are_404_and_only_admins_pause(admin: httpx.Client, client: httpx.Client) -> None:
    unknown = admin.post("/v1/admin/queues/nope/pause")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert "no queue 'nope'" in unknown.json()["error"]["message"]
    assert admin.post("/v1/admin/job-types/nope.nope/resume").status_code == 404
    assert client.post("/v1/admin/queues/default/pause").status_code == 403
    assert admin.post("/v1/admin/queues/default/pause", json={"reason": 5}).status_code == 422


def test_the_cli_pauses_lists_and_resumes() -> None:
    runner = CliRunner()
    paused = runner.invoke(main, ["queues", "pause", "chain", "--reason", "rpc provider down"])
    assert paused.exit_code == 0, paused.output
    assert "PAUSED by cli:" in paused.output
    assert "(rpc provider down)" in paused.output
    listed = runner.invoke(main, ["queues", "list"])
    assert [line.split()[1] for line in listed.output.splitlines() if "PAUSED" in line] == ["chain"]
    resumed = runner.invoke(main, ["queues", "resume", "chain"])
    assert "running" in resumed.output
    unknown = runner.invoke(main, ["queues", "pause", "--job-type", "nope"])
    assert unknown.exit_code == 1
    assert "no job type 'nope'" in unknown.output
