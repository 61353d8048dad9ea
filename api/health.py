"""``/healthz`` and ``/readyz``: what a load balancer and an orchestrator ask, without a key."""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.errors import json_response
from roadie.db import async_engine


class Health(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["ok"]


class Readiness(BaseModel):
    """Each dependency's state: ``ok``, or why it is unreachable."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ready", "not ready"]
    checks: dict[str, str]


async def healthz(request: Request) -> Response:
    """The process is up."""
    return json_response(Health(status="ok"))


def _broker_reachable() -> None:
    from workers.app import app as celery_app

    with celery_app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)


async def readyz(request: Request) -> Response:
    """Ready when both the database and the broker answer."""
    checks: dict[str, str] = {}
    try:
        async with async_engine().connect() as connection:
            await asyncio.wait_for(connection.execute(text("SELECT 1")), timeout=2)
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        await asyncio.wait_for(asyncio.to_thread(_broker_reachable), timeout=5)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["broker"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return json_response(Readiness(status="ready" if ready else "not ready", checks=checks), 200 if ready else 503)


routes: list[BaseRoute] = [Route("/healthz", healthz), Route("/readyz", readyz)]
