"""What a job looks like to the API and the CLI: pydantic models, whose schemas are also the OpenAPI document's.

A response is built as one of these models and encoded from it, so the document and what the API
sends cannot disagree: a field the code adds, drops or retypes fails validation in the tests.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.platform import ATTEMPT_OUTCOMES, Job, JobStatus
from roadie.jobs.creation import NewJob


class View(BaseModel):
    """A response body: exactly these fields (``additionalProperties: false`` in the document)."""

    model_config = ConfigDict(extra="forbid")

    def plain(self) -> dict[str, Any]:
        """The body as JSON values (for the CLI and the console's pages), without the parts not loaded."""
        return self.model_dump(mode="json", exclude_unset=True)


class Progress(View):
    percent: int = Field(ge=0, le=100)
    stage: str | None


class JobError(View):
    """How the job failed; ``traceback`` only for admins."""

    code: str
    message: str | None
    traceback: str | None = Field(default=None, description="Admins only.")


class ChildJob(View):
    id: uuid.UUID
    type: str
    status: JobStatus
    progress: int = Field(ge=0, le=100)


class Rerun(View):
    """One re-run of the job: who asked, and what the job was before."""

    by: str | None
    at: dt.datetime
    attempt: int | None
    previous_status: JobStatus
    forced: bool
    previous_error_code: str | None


class Attempt(View):
    """One claim of the job by a worker, and how it ended."""

    number: int
    worker: str
    outcome: Literal[ATTEMPT_OUTCOMES]  # type: ignore[valid-type]
    started_at: dt.datetime
    finished_at: dt.datetime | None
    error_code: str | None
    error_message: str | None


class JobView(View):
    """A job in the ledger. ``children``, ``reruns`` and ``attempt_history`` are there when loaded (one job)."""

    id: uuid.UUID
    url: str
    type: str
    queue: str
    status: JobStatus
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    progress: Progress
    result: dict[str, Any] | None
    error: JobError | None
    cancel_requested: bool
    idempotency_key: str | None
    request_id: str | None
    parent_id: uuid.UUID | None
    batch_id: uuid.UUID | None
    callback_url: str | None = Field(description="Where the job's events are also posted, signed.")
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    next_attempt_at: dt.datetime | None
    run_at: dt.datetime | None = Field(description="A delayed job's due time; null when it was due on acceptance.")
    priority: int = Field(ge=0, le=9, description="0 (lowest) to 9 (highest).")
    children: list[ChildJob] = Field(default_factory=list)
    reruns: list[Rerun] = Field(default_factory=list)
    attempt_history: list[Attempt] = Field(default_factory=list)


def job_view(job: Job | NewJob, *, base_url: str = "", admin: bool = False) -> JobView:
    """A job as the API and the CLI show it; what is not loaded (children, events, attempts) is left out."""
    loaded = job.__dict__
    error = None
    if job.error_code:
        error = JobError(code=job.error_code, message=job.error_message)
        if admin:
            error.traceback = job.error_traceback
    view = JobView(
        id=job.id,
        url=f"{base_url}/v1/jobs/{job.id}",
        type=job.type,
        queue=job.queue,
        status=job.status,
        payload=job.payload,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        progress=Progress(percent=job.progress_percent, stage=job.progress_stage),
        result=job.result,
        error=error,
        cancel_requested=job.cancel_requested,
        idempotency_key=job.idempotency_key,
        request_id=job.request_id,
        parent_id=job.parent_id,
        batch_id=job.batch_id,
        callback_url=job.callback_url,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        next_attempt_at=job.next_attempt_at,
        run_at=job.run_at,
        priority=job.priority,
    )
    if "children" in loaded:
        view.children = [
            ChildJob(id=c.id, type=c.type, status=c.status, progress=c.progress_percent) for c in job.children
        ]
    if "events" in loaded:
        view.reruns = [
            Rerun(by=e.actor, at=e.created_at, attempt=e.attempt, **(e.detail or {}))
            for e in job.events
            if e.kind == "rerun"
        ]
    if "attempt_rows" in loaded:
        view.attempt_history = [
            Attempt(
                number=a.number,
                worker=a.worker,
                outcome=a.outcome,
                started_at=a.started_at,
                finished_at=a.finished_at,
                error_code=a.error_code,
                error_message=a.error_message,
            )
            for a in job.attempt_rows
        ]
    return view
