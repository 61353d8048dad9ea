"""``/v1/jobs``: submit, read, list and cancel jobs."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, create_model
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api import telemetry
from api.errors import json_response
from api.http import base_url, parse, parse_body, path_uuid, read_json, require, require_scope
from api.params import TextFilter, Timestamp
from models.platform import JobStatus
from roadie import quotas
from roadie.db import async_transaction
from roadie.jobs import intake
from roadie.jobs.group_commit import group_commit
from roadie.jobs.intake import IntakeError, JobFilter
from roadie.jobs.options import RunOptions
from roadie.jobs.types import job_types
from roadie.jobs.views import JobView, job_view
from roadie.webhooks.dispatch import check_callback_url
from roadie.webhooks.urls import CallbackUrl

IdempotencyKeyHeader = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]


class JobRequest(RunOptions):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=100)
    payload: dict[str, Any] = Field(description="The job type's payload; {} for a type that needs none.")
    callback_url: CallbackUrl | None = None


def job_request_adapter() -> TypeAdapter[Any]:
    """The body of ``POST /v1/jobs`` per job type, for the document: its ``type``, and its payload model.

    The API validates the same models: the body as JobRequest, then the payload with its type's model.
    """
    variants = [
        create_model(
            f"JobRequest_{name.replace('.', '_')}",
            __base__=RunOptions,
            __doc__=job_type.description,
            type=(Literal[name], ...),  # type: ignore[arg-type]  # a Literal of a runtime value
            payload=(job_type.payload_model, ...),
            callback_url=(CallbackUrl | None, None),
        )
        for name, job_type in sorted(job_types().items())
    ]
    union: Any = Union[tuple(variants)]  # noqa: UP007 - a union of types known at runtime
    return TypeAdapter(Annotated[union, Field(discriminator="type")])


class IdempotencyHeader(BaseModel):
    key: IdempotencyKeyHeader | None = None


class JobPage(BaseModel):
    """Jobs, newest first; ``next_cursor`` asks for the next page (null on the last)."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[JobView]
    next_cursor: str | None


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: list[Literal[tuple(s.value for s in JobStatus)]] = Field(default_factory=list)  # type: ignore[valid-type]
    type: list[TextFilter] = Field(default_factory=list)
    created_after: Timestamp | None = None
    created_before: Timestamp | None = None
    error_code: TextFilter | None = None
    limit: int = Field(default=50, ge=1, le=200)
    cursor: TextFilter | None = None

    def job_filter(self) -> JobFilter:
        return JobFilter(self.status, self.type, self.created_after, self.created_before, self.error_code)


def query_dict(request: Request, multi: set[str]) -> dict[str, Any]:
    """Query parameters as a dict; repeated and comma-separated values become lists for ``multi``.

    An empty value stays (``type=`` is ``[""]``), so the model refuses it as it refuses ``error_code=``.
    """
    data: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if key in multi:
            data.setdefault(key, []).extend(value.split(","))
        else:
            data[key] = value
    return data


async def submit_job(request: Request) -> Response:
    client = await require(None, request, "jobs:write")  # before reading a byte of the body
    key = parse(IdempotencyHeader, {"key": request.headers.get("idempotency-key")}, "Idempotency-Key").key
    job_request = parse_body(JobRequest, await read_json(request))
    job_type = job_types().get(job_request.type)
    if job_type is None:
        raise IntakeError(
            422,
            "unknown_job_type",
            f"unknown job type {job_request.type!r}",
            [{"field": "type", "reason": f"must be one of {', '.join(sorted(job_types()))}"}],
        )
    require_scope(client, job_type.scope, job_type.name)
    parse_body(job_type.payload_model, job_request.payload, "payload")
    if job_request.callback_url is not None:
        async with async_transaction() as session:
            await check_callback_url(session, client.id, job_request.callback_url, "callback_url")
    await quotas.charge(client, 1, key)
    # Committed (with its outbox row) in one transaction with the jobs of concurrent requests.
    submission = await group_commit().submit(
        job_type,
        job_request.payload,
        client=client,
        idempotency_key=key,
        callback_url=job_request.callback_url,
        options=job_request,
    )
    view = job_view(submission.job, base_url=base_url(request))
    headers = {"Location": view.url}
    if submission.replayed:
        headers["Idempotent-Replayed"] = "true"
    else:
        telemetry.count_accepted(job_type.name)
    telemetry.annotate(
        request, job_id=str(view.id), job_type=job_type.name, client=client.name, replayed=submission.replayed
    )
    return json_response(view, 202, headers)


async def get_job(request: Request) -> Response:
    job_id = path_uuid(request)
    async with async_transaction() as session:
        client = await require(session, request, "jobs:read")
        job = await intake.find_job(session, job_id, client)
        return json_response(job_view(job, base_url=base_url(request), admin="admin" in client.scopes))


async def list_jobs(request: Request) -> Response:
    async with async_transaction() as session:
        client = await require(session, request, "jobs:read")
        query = parse(ListQuery, query_dict(request, {"status", "type"}))
        jobs, next_cursor = await intake.list_jobs(
            session, client, query.job_filter(), limit=query.limit, cursor=query.cursor
        )
        url = base_url(request)
        return json_response(JobPage(jobs=[job_view(job, base_url=url) for job in jobs], next_cursor=next_cursor))


async def cancel_job(request: Request) -> Response:
    job_id = path_uuid(request)
    async with async_transaction() as session:
        client = await require(session, request, "jobs:write")
        job = await intake.find_job(session, job_id, client, lock=True)
        job = await intake.cancel(session, job, actor=client.name)
        return json_response(job_view(job, base_url=base_url(request)), 202)


routes = [
    Route("/v1/jobs", submit_job, methods=["POST"]),
    Route("/v1/jobs", list_jobs, methods=["GET"]),
    Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/v1/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
]
