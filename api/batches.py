"""``/v1/batches``: jobs submitted together, followed together, and one ``batch.completed``."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api import telemetry
from api.errors import json_response
from api.http import base_url, parse, parse_body, path_uuid, read_json, require, require_scope
from api.jobs import IdempotencyHeader
from models.webhooks import Batch
from roadie import quotas
from roadie.db import async_transaction
from roadie.jobs import batches
from roadie.jobs.batches import BatchRequest
from roadie.jobs.intake import IntakeError, field_error
from roadie.jobs.types import JobType, job_types


class BatchView(BaseModel):
    """A batch: how many of its jobs are in each status, and whether it has completed."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID
    url: str
    expected_jobs: int = Field(description="Jobs that complete the batch (track uploads may join it up to this).")
    total_jobs: int = Field(description="Jobs in the batch so far.")
    succeeded: int
    failed: int
    cancelled: int
    by_status: dict[str, int] = Field(description="The batch's jobs by their status now.")
    progress: int = Field(ge=0, le=100, description="Finished jobs, in percent of expected_jobs.")
    callback_url: str | None
    job_ids: list[uuid.UUID] = Field(default_factory=list, description="In the answer to the POST only.")
    created_at: dt.datetime
    completed_at: dt.datetime | None = Field(description="When its last job finished (batch.completed was written).")


def batch_view(batch: Batch, by_status: dict[str, int], url: str, job_ids: list[uuid.UUID] | None = None) -> BatchView:
    finished = batch.succeeded + batch.failed + batch.cancelled
    return BatchView(
        id=batch.id,
        url=f"{url}/v1/batches/{batch.id}",
        expected_jobs=batch.expected_jobs,
        total_jobs=batch.total_jobs,
        succeeded=batch.succeeded,
        failed=batch.failed,
        cancelled=batch.cancelled,
        by_status=by_status,
        progress=finished * 100 // batch.expected_jobs,
        callback_url=batch.callback_url,
        job_ids=job_ids or [],
        created_at=batch.created_at,
        completed_at=batch.completed_at,
    )


def checked_types(request: BatchRequest, client_scopes: object) -> list[JobType]:
    """Each job's type: known, allowed to the client, its payload valid; else the 4xx naming ``jobs[i]``."""
    known = job_types()
    checked = []
    for index, job in enumerate(request.jobs):
        job_type = known.get(job.type)
        if job_type is None:
            reason = f"must be one of {', '.join(sorted(known))}"
            raise IntakeError(
                422, "unknown_job_type", f"unknown job type {job.type!r}", [field_error(f"jobs[{index}].type", reason)]
            )
        parse_body(job_type.payload_model, job.payload, f"jobs[{index}].payload")
        checked.append(job_type)
    return checked


async def create_batch(request: Request) -> Response:
    client = await require(None, request, "jobs:write")  # before reading a byte of the body
    key = parse(IdempotencyHeader, {"key": request.headers.get("idempotency-key")}, "Idempotency-Key").key
    batch_request = parse_body(BatchRequest, await read_json(request))
    types = checked_types(batch_request, client.scopes)
    for job_type in {job_type.name: job_type for job_type in types}.values():
        require_scope(client, job_type.scope, job_type.name)
    await quotas.charge(client, len(types), key)
    async with async_transaction() as session:
        created = await batches.create_batch(session, client, batch_request, types, idempotency_key=key)
        by_status = await batches.status_counts(session, created.batch.id)
    view = batch_view(created.batch, by_status, base_url(request), created.job_ids)
    headers = {"Location": view.url}
    if created.replayed:
        headers["Idempotent-Replayed"] = "true"
    else:
        for job_type in types:
            telemetry.count_accepted(job_type.name)
    telemetry.annotate(request, batch_id=str(view.id), jobs=len(types), replayed=created.replayed)
    return json_response(view, 202, headers)


async def get_batch(request: Request) -> Response:
    batch_id = path_uuid(request, "batch_id")
    async with async_transaction() as session:
        client = await require(session, request, "jobs:read")
        batch = await batches.find_batch(session, batch_id, client)
        by_status = await batches.status_counts(session, batch.id)
    return json_response(batch_view(batch, by_status, base_url(request)))


routes = [
    Route("/v1/batches", create_batch, methods=["POST"]),
    Route("/v1/batches/{batch_id}", get_batch, methods=["GET"]),
]
