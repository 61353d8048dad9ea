"""``/v1/admin``: re-run failed jobs, one or by filter; every re-run is recorded on the job."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict, JsonValue
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.errors import json_response
from api.http import base_url, parse_body, path_uuid, read_json, require
from api.params import BaseUnits, TextFilter, Timestamp
from roadie.db import async_transaction
from roadie.jobs import intake
from roadie.jobs.intake import IntakeError, JobFilter
from roadie.jobs.views import job_view
from roadie.ledger import payouts


class RetryOne(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = Field(default=False, description="Also re-run a job that succeeded.")


#: RetryMany's rule in its schema: a filter that narrows, or ``all: true``.
NARROWED: list[JsonValue] = [
    {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
    for name in ("type", "error_code", "created_after", "created_before")
]
NARROWED_OR_ALL: JsonDict = {"anyOf": [*NARROWED, {"required": ["all"], "properties": {"all": {"const": True}}}]}


class RetryMany(BaseModel):
    """A bulk re-run's filter: one that narrows nothing re-runs every job of the status, so it needs ``all``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=NARROWED_OR_ALL)

    type: TextFilter | None = None
    status: Literal["failed", "cancelled", "succeeded"] = "failed"
    error_code: TextFilter | None = None
    created_after: Timestamp | None = None
    created_before: Timestamp | None = None
    all: bool = Field(default=False, description="Required to re-run every job of the status (no other filter).")
    force: bool = False
    limit: int = Field(default=500, ge=1, le=5000)

    @property
    def narrowed(self) -> bool:
        return bool(self.type or self.error_code or self.created_after or self.created_before)


class Rerunning(BaseModel):
    """The jobs a bulk re-run queued again."""

    model_config = ConfigDict(extra="forbid")

    count: int
    job_ids: list[uuid.UUID]


class PayoutHold(BaseModel):
    """A balance owed but held: the owner's wallet cannot receive it. Amounts are integer base units."""

    model_config = ConfigDict(extra="forbid")

    account_id: int
    user_id: uuid.UUID
    kind: str
    owed: BaseUnits
    wallet: str
    reason: str
    held_since: dt.datetime
    last_period_start: dt.datetime


class PayoutHolds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    holds: list[PayoutHold]


async def retry_job(request: Request) -> Response:
    job_id = path_uuid(request)
    admin = await require(None, request, "admin")  # before reading a byte of the body
    options = parse_body(RetryOne, await read_json(request, empty={}))  # no body: the defaults
    async with async_transaction() as session:
        job = await intake.find_job(session, job_id, admin, lock=True)
        job = await intake.rerun(session, job, actor=admin.name, force=options.force)
        return json_response(job_view(job, base_url=base_url(request), admin=True), 202)


async def retry_jobs(request: Request) -> Response:
    admin = await require(None, request, "admin")  # before reading a byte of the body
    options = parse_body(RetryMany, await read_json(request))  # no body (null) is no filter: 422
    if options.status == "succeeded" and not options.force:
        raise IntakeError(
            409,
            "job_succeeded",
            "re-running succeeded jobs needs force=true",
            [{"field": "force", "reason": "must be true to re-run succeeded jobs"}],
        )
    if not (options.narrowed or options.all):
        raise IntakeError(
            422,
            "filter_required",
            "a bulk re-run needs a filter (type, error_code, created_after, created_before) or all=true",
            [{"field": "all", "reason": "must be true to re-run every job of the status"}],
        )
    job_filter = JobFilter(
        (options.status,),
        (options.type,) if options.type else (),
        options.created_after,
        options.created_before,
        options.error_code,
    )
    async with async_transaction() as session:
        job_ids = await intake.rerun_matching(session, job_filter, admin.name, force=options.force, limit=options.limit)
    return json_response(Rerunning(count=len(job_ids), job_ids=job_ids), 202)


async def payout_holds(request: Request) -> Response:
    """Balances owed but not paid because the owner's wallet cannot receive: they wait for an admin."""
    async with async_transaction() as session:
        await require(session, request, "admin")
        return json_response(PayoutHolds.model_validate({"holds": await payouts.held(session)}))


routes = [
    Route("/v1/admin/payout-holds", payout_holds, methods=["GET"]),
    Route("/v1/admin/jobs/retry", retry_jobs, methods=["POST"]),
    Route("/v1/admin/jobs/{job_id}/retry", retry_job, methods=["POST"]),
]
