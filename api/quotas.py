"""``/v1/admin/clients/{name}/quota``: read and set an API client's quota of accepted jobs (admin)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.errors import json_response
from api.http import parse_body, read_json, require
from models.platform import ApiClient
from roadie import quotas
from roadie.db import async_transaction
from roadie.jobs.intake import IntakeError

#: The largest quota one can set; above it, leave it unset (no limit).
MAX_QUOTA = 1_000_000_000


class QuotaChange(BaseModel):
    """A client's own quota; null: the setting's (``ROADIE_CLIENT_JOBS_PER_MINUTE`` / ``_PER_DAY``)."""

    model_config = ConfigDict(extra="forbid")

    jobs_per_minute: int | None = Field(ge=0, le=MAX_QUOTA, description="0 refuses every job with 429.")
    jobs_per_day: int | None = Field(ge=0, le=MAX_QUOTA)


class QuotaView(BaseModel):
    """The client's own quota and the one in force (its own, else the setting's; null: no limit)."""

    model_config = ConfigDict(extra="forbid")

    client: str
    jobs_per_minute: int | None
    jobs_per_day: int | None
    effective_jobs_per_minute: int | None
    effective_jobs_per_day: int | None


def quota_view(client: ApiClient) -> QuotaView:
    effective = quotas.quota_of(client)
    return QuotaView(
        client=client.name,
        jobs_per_minute=client.jobs_per_minute,
        jobs_per_day=client.jobs_per_day,
        effective_jobs_per_minute=effective.jobs_per_minute,
        effective_jobs_per_day=effective.jobs_per_day,
    )


def _no_client(name: str) -> IntakeError:
    return IntakeError(404, "not_found", f"no live API key named {name!r}")


async def get_quota(request: Request) -> Response:
    name = request.path_params["name"]
    async with async_transaction() as session:
        await require(session, request, "admin")
        client = await session.scalar(select(ApiClient).where(ApiClient.name == name, ApiClient.revoked_at.is_(None)))
    if client is None:
        raise _no_client(name)
    return json_response(quota_view(client))


async def set_quota(request: Request) -> Response:
    admin = await require(None, request, "admin")  # before reading a byte of the body
    change = parse_body(QuotaChange, await read_json(request))
    name = request.path_params["name"]
    async with async_transaction() as session:
        client = await quotas.set_quota(session, name, change.jobs_per_minute, change.jobs_per_day, admin.name)
    if client is None:
        raise _no_client(name)
    return json_response(quota_view(client))


routes = [
    Route("/v1/admin/clients/{name}/quota", get_quota, methods=["GET"]),
    Route("/v1/admin/clients/{name}/quota", set_quota, methods=["PUT"]),
]
