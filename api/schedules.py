"""``/v1/admin/schedules``: beat's entries with their last and next run; disable, enable or run one now."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.errors import json_response
from api.http import require
from roadie.db import async_transaction
from schedules import state


class ScheduleView(BaseModel):
    """One beat entry as an operator sees it."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    name: str
    task: str
    schedule: str = Field(description="`every 15s` or a crontab (UTC): the ROADIE_SCHEDULE_* beat last ran it on.")
    enabled: bool
    changed_by: str | None
    changed_at: dt.datetime | None
    run_requested_at: dt.datetime | None = Field(description="A run-now request no beat has taken yet.")
    last_run_at: dt.datetime | None
    last_outcome: str | None = Field(description="done (housekeeping ran), sent (task sent to a worker), or failed.")
    last_detail: str | None
    next_run_at: dt.datetime | None = Field(description="None while disabled.")


class ScheduleList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedules: list[ScheduleView]


async def list_schedules(request: Request) -> Response:
    async with async_transaction() as session:
        await require(session, request, "admin")
        found = await state.list_schedules(session)
    return json_response(ScheduleList(schedules=[ScheduleView.model_validate(view) for view in found]))


async def _change(request: Request, action: state.Action) -> Response:
    admin = await require(None, request, "admin")
    async with async_transaction() as session:
        view = await state.change(session, request.path_params["name"], action, admin.name)
    return json_response(ScheduleView.model_validate(view), 202 if action == "run" else 200)


async def run_now(request: Request) -> Response:
    return await _change(request, "run")


async def disable(request: Request) -> Response:
    return await _change(request, "disable")


async def enable(request: Request) -> Response:
    return await _change(request, "enable")


routes = [
    Route("/v1/admin/schedules", list_schedules, methods=["GET"]),
    Route("/v1/admin/schedules/{name}/run", run_now, methods=["POST"]),
    Route("/v1/admin/schedules/{name}/disable", disable, methods=["POST"]),
    Route("/v1/admin/schedules/{name}/enable", enable, methods=["POST"]),
]
