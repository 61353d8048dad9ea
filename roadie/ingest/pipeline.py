"""``track.ingest``: one parent job, one child job per stage, advanced each time a child finishes.

The parent's handler is a short step, not a long wait: it looks at its children, starts every stage
whose predecessors are done, and hands its worker back (``WaitForChildren``). A finishing child
re-queues it (a trigger, in the child's own transaction) and the step runs again. So the parent never
holds a worker slot while a stage runs, and a crash anywhere only repeats a step.

- A stage that failed fails the parent with that stage's error code and message.
- An admin re-run of the failed parent resumes: finished stages are kept, a stage whose failure
  predates the re-run gets a new child job.
- A track whose audio repeats an earlier track's under the ``hold`` policy stops before ``pin_track``:
  the parent succeeds with ``held: true`` and the track is ``held``. An admin's (forced) re-run of the
  parent after the verdict releases it, and the pipeline goes on from there.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.music import Track
from models.platform import Job, JobEvent, JobStatus
from roadie.db import transaction
from roadie.ingest import duplicates
from roadie.ingest.duplicates import Verdict
from roadie.jobs.creation import enqueue
from roadie.jobs.errors import PermanentError, WaitForChildren
from roadie.jobs.types import job_types


@dataclass(frozen=True)
class Stage:
    name: str
    job_type: str
    after: tuple[str, ...]
    weight: int  # share of the parent's progress


STAGES = (
    Stage("transcode", "media.transcode", (), 40),
    Stage("cover", "media.cover", (), 5),
    Stage("analysis", "media.analyse", ("transcode",), 15),
    Stage("pin_track", "ipfs.pin_track", ("transcode", "cover"), 20),
    Stage("pin_metadata", "ipfs.pin_metadata", ("analysis", "pin_track"), 10),
    Stage("mint", "nft.mint", ("pin_metadata",), 15),
)


#: A track held as a duplicate stops before this stage: nothing of it is published, nothing minted.
HELD_BEFORE = "pin_track"


def stages_for(mint: bool) -> tuple[Stage, ...]:
    return STAGES if mint else tuple(stage for stage in STAGES if stage.name != "mint")


@dataclass
class Step:
    """What one run of the parent found and did."""

    view: list[dict[str, Any]]
    waiting_on: list[uuid.UUID]
    failed: Job | None
    percent: int
    held: bool = False  # a duplicate held for an admin: nothing from HELD_BEFORE on starts


def _stage_view(stage: Stage, status: str, child: Job | None) -> dict[str, Any]:
    view: dict[str, Any] = {"name": stage.name, "job_type": stage.job_type, "status": status}
    if child is not None:
        view["job_id"] = str(child.id)
        view["progress"] = 100 if child.status == JobStatus.SUCCEEDED else child.progress_percent
        if child.status == JobStatus.SUCCEEDED:
            view["result"] = child.result
        if child.error_code and child.status in (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.RETRYING):
            view["error"] = {"code": child.error_code, "message": child.error_message}
    return view


def _start_child(session: Session, parent: Job, stage: Stage, track_id: uuid.UUID) -> Job:
    return enqueue(
        session,
        job_types()[stage.job_type],
        {"track_id": str(track_id)},
        actor=parent.type,
        detail={"parent_id": str(parent.id)},
        parent_id=parent.id,
        client_id=parent.client_id,
        priority=parent.priority,  # an upload asked to overtake a backfill does so at every stage
    )


def _latest_children(session: Session, parent: Job) -> dict[str, Job]:
    """Each stage's most recent child job, by job type."""
    latest: dict[str, Job] = {}
    for row in session.scalars(select(Job).where(Job.parent_id == parent.id).order_by(Job.created_at, Job.id)):
        latest[row.type] = row
    return latest


def _standing(child: Job | None, rerun_at: dt.datetime | None) -> Job | None:
    """The child that stands for its stage: None when there is none, or it failed before the last re-run."""
    if child is None or child.status not in (JobStatus.FAILED, JobStatus.CANCELLED) or rerun_at is None:
        return child
    return None if child.finished_at is not None and child.finished_at < rerun_at else child


def _percent(view: list[dict[str, Any]], mint: bool) -> int:
    """Progress weighted by stage, rounded down: 100 only when every stage is done."""
    weights = {stage.name: stage.weight for stage in stages_for(mint)}
    done = sum(weights[v["name"]] * (100 if v["status"] == "succeeded" else v.get("progress", 0)) for v in view)
    return done // sum(weights.values())


def _held(session: Session, track_id: uuid.UUID, rerun_at: dt.datetime | None) -> Verdict | None:
    """The duplicate verdict that holds the track, unless an admin re-ran the pipeline since it was made."""
    found = duplicates.verdict_of(session, track_id)
    if found is None or found[0].decision != "hold":
        return None
    return None if rerun_at is not None and rerun_at > found[1] else found[0]


def _plan(session: Session, parent: Job, track_id: uuid.UUID, mint: bool) -> Step:
    """Start what can start; say what runs, what is done and whether a stage failed since the last re-run."""
    latest = _latest_children(session, parent)
    rerun_at: dt.datetime | None = session.scalar(
        select(func.max(JobEvent.created_at)).where(JobEvent.job_id == parent.id, JobEvent.kind == "rerun")
    )
    held = _held(session, track_id, rerun_at)
    status: dict[str, str] = {}
    step = Step(view=[], waiting_on=[], failed=None, percent=0)
    for stage in stages_for(mint):
        child = _standing(latest.get(stage.job_type), rerun_at)
        ready = all(status.get(name) == "succeeded" for name in stage.after)
        if child is None and ready and held is not None and stage.name == HELD_BEFORE:
            status[stage.name], step.held = "held", True
            step.view.append(_stage_view(stage, "held", None))
            continue
        if child is None and step.failed is None and ready:
            child = _start_child(session, parent, stage, track_id)
        status[stage.name] = child.status if child is not None else "pending"
        step.view.append(_stage_view(stage, status[stage.name], child))
        if child is not None and child.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            step.failed = step.failed or child
        elif child is not None and child.status not in JobStatus.finished():
            step.waiting_on.append(child.id)
    step.percent = _percent(step.view, mint)
    return step


def advance(job_id: uuid.UUID, lease_id: uuid.UUID, track_id: uuid.UUID, mint: bool) -> dict[str, Any]:
    """One step of the pipeline for the parent job holding ``lease_id``; see the module docstring."""
    with transaction() as session:
        parent = session.scalar(select(Job).where(Job.id == job_id, Job.lease_id == lease_id).with_for_update())
        if parent is None:
            raise PermanentError("this run of the pipeline lost its lease", code="lease_lost")
        track = session.get(Track, track_id, with_for_update=True)
        if track is None:
            raise PermanentError(f"no track {track_id}", code="track_not_found")
        step = _plan(session, parent, track_id, mint)
        running = [v["name"] for v in step.view if v["status"] not in ("succeeded", "pending", "failed", "cancelled")]
        parent.progress_percent, parent.progress_stage = step.percent, ", ".join(running)[:100] or None
        result: dict[str, Any] = {"track_id": str(track_id), "stages": step.view}
        found = duplicates.verdict_of(session, track_id)
        if found is not None and found[0].decision is not None:
            result["duplicate_of"] = found[0].as_json()
        if step.failed is not None:
            track.status = "failed"
            parent.result = result  # the failure keeps the stages as they were; record_failure leaves it
        elif step.waiting_on:
            track.status = "ingesting"
        elif step.held:
            track.status, result["held"] = "held", True
        else:
            track.status = "ready"
    if step.failed is not None:
        stage = next(v["name"] for v in step.view if v.get("job_id") == str(step.failed.id))
        code = step.failed.error_code or ("cancelled" if step.failed.status == JobStatus.CANCELLED else "stage_failed")
        raise PermanentError(f"{stage} failed: {step.failed.error_message or step.failed.status}", code=code)
    if step.waiting_on:
        raise WaitForChildren(step.waiting_on, result=result)
    return result
