"""The intake API application: ``uvicorn api.app:app``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api import admin, console, jobs, ledger, telemetry, tracks
from api.errors import on_client_disconnect, on_http_error, on_intake_error, on_unexpected_error
from api.openapi import openapi_spec
from api.telemetry import RequestContextMiddleware
from roadie.db import async_engine, use_role
from roadie.heap import freeze_startup_heap
from roadie.jobs.intake import IntakeError
from roadie.logs import configure_logging

log = logging.getLogger(__name__)


async def healthz(request: Request) -> JSONResponse:
    """The process is up."""
    return JSONResponse({"status": "ok"})


def _broker_reachable() -> None:
    from workers.app import app as celery_app

    with celery_app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)


async def readyz(request: Request) -> JSONResponse:
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
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
    )


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(openapi_spec())


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Served (not merely imported): what start-up allocated is frozen out of the collector's sight."""
    use_role("api")
    freeze_startup_heap()
    yield


def create_app() -> Starlette:
    configure_logging("api")
    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/healthz", healthz),
            Route("/metrics", telemetry.metrics),
            Route("/readyz", readyz),
            Route("/openapi.json", openapi),
            *jobs.routes,
            *tracks.routes,
            *ledger.routes,
            *admin.routes,
            console.mount(),
        ],
        middleware=[Middleware(RequestContextMiddleware)],
        exception_handlers={
            IntakeError: on_intake_error,
            HTTPException: on_http_error,
            ClientDisconnect: on_client_disconnect,
            Exception: on_unexpected_error,
        },
    )


app = create_app()
