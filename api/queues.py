"""``/v1/admin/queues`` and ``/v1/admin/job-types``: pause and resume a pool's queue or one job type.

While paused nothing new of it starts (see :mod:`roadie.jobs.pauses`); intake still accepts, running jobs finish.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.errors import json_response
from api.http import parse_body, read_json, require
from roadie.db import async_transaction
from roadie.jobs import pauses


class PauseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500, description="Why, for the audit trail and the console.")


class QueueState(BaseModel):
    """A queue or job type: paused or not (by whom, since when, why), and its jobs held or running now."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    kind: Literal["queue", "type"]
    name: str
    paused: bool
    paused_by: str | None
    paused_at: dt.datetime | None
    reason: str | None
    held: int = Field(description="Jobs waiting in the ledger until the pause is lifted.")
    running: int = Field(description="Jobs running now; a pause lets them finish.")


class QueueStates(BaseModel):
    """Every queue, and every paused job type."""

    model_config = ConfigDict(extra="forbid")

    queues: list[QueueState]


async def list_queues(request: Request) -> Response:
    async with async_transaction() as session:
        await require(session, request, "admin")
        found = await pauses.states(session)
    return json_response(QueueStates(queues=[QueueState.model_validate(state) for state in found]))


def _target(request: Request) -> tuple[pauses.Kind, str]:
    if "queue" in request.path_params:
        return "queue", request.path_params["queue"]
    return "type", request.path_params["job_type"]


async def pause(request: Request) -> Response:
    admin = await require(None, request, "admin")  # before reading a byte of the body
    options = parse_body(PauseRequest, await read_json(request, empty={}))
    kind, name = _target(request)
    async with async_transaction() as session:
        state = await pauses.pause(session, kind, name, admin.name, options.reason)
    return json_response(QueueState.model_validate(state))


async def resume(request: Request) -> Response:
    admin = await require(None, request, "admin")
    kind, name = _target(request)
    async with async_transaction() as session:
        state = await pauses.resume(session, kind, name, admin.name)
    return json_response(QueueState.model_validate(state))


routes = [
    Route("/v1/admin/queues", list_queues, methods=["GET"]),
    Route("/v1/admin/queues/{queue}/pause", pause, methods=["POST"]),
    Route("/v1/admin/queues/{queue}/resume", resume, methods=["POST"]),
    Route("/v1/admin/job-types/{job_type}/pause", pause, methods=["POST"]),
    Route("/v1/admin/job-types/{job_type}/resume", resume, methods=["POST"]),
]
