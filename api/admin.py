"""``/v1/admin``: re-run failed jobs, one or by filter; every re-run is recorded on the job."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.http import base_url, parse, path_uuid, read_json, require
from roadie.db import async_transaction
from roadie.jobs import intake
from roadie.jobs.intake import IntakeError, JobFilter
from roadie.ledger import payouts


class RetryOne(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = Field(default=False, description="Also re-run a job that succeeded.")


class RetryMany(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str | None = None
    status: Literal["failed", "cancelled", "succeeded"] = "failed"
    error_code: str | None = None
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None
    force: bool = False
    limit: int = Field(default=500, ge=1, le=5000)


async def retry_job(request: Request) -> JSONResponse:
    job_id = path_uuid(request)
    body = await read_json(request)
    options = parse(RetryOne, body if body is not None else {})
    async with async_transaction() as session:
        admin = await require(session, request, "admin")
        job = await intake.find_job(session, job_id, admin, lock=True)
        job = await intake.rerun(session, job, actor=admin.name, force=options.force)
        return JSONResponse(intake.job_view(job, base_url=base_url(request), admin=True), status_code=202)


async def retry_jobs(request: Request) -> JSONResponse:
    body = await read_json(request)
    options = parse(RetryMany, body if body is not None else {})
    if options.status == "succeeded" and not options.force:
        raise IntakeError(
            409,
            "job_succeeded",
            "re-running succeeded jobs needs force=true",
            [{"field": "force", "reason": "must be true to re-run succeeded jobs"}],
        )
    job_filter = JobFilter(
        (options.status,),
        (options.type,) if options.type else (),
        options.created_after,
        options.created_before,
        options.error_code,
    )
    async with async_transaction() as session:
        admin = await require(session, request, "admin")
        job_ids = await intake.rerun_matching(session, job_filter, admin.name, force=options.force, limit=options.limit)
    return JSONResponse({"count": len(job_ids), "job_ids": [str(i) for i in job_ids]}, status_code=202)


async def payout_holds(request: Request) -> JSONResponse:
    """Balances owed but not paid because the owner's wallet cannot receive: they wait for an admin."""
    async with async_transaction() as session:
        await require(session, request, "admin")
        return JSONResponse({"holds": await payouts.held(session)})


routes = [
    Route("/v1/admin/payout-holds", payout_holds, methods=["GET"]),
    Route("/v1/admin/jobs/retry", retry_jobs, methods=["POST"]),
    Route("/v1/admin/jobs/{job_id}/retry", retry_job, methods=["POST"]),
]
