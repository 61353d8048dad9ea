"""The intake API application: ``uvicorn api.app:app``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from api import (
    admin,
    batches,
    console,
    health,
    jobs,
    ledger,
    openapi,
    queues,
    quotas,
    schedules,
    telemetry,
    tracks,
    webhooks,
)
from api.errors import (
    on_client_disconnect,
    on_dependency_unavailable,
    on_http_error,
    on_intake_error,
    on_unexpected_error,
)
from api.telemetry import RequestContextMiddleware
from roadie.db import use_role
from roadie.heap import freeze_startup_heap
from roadie.jobs.intake import IntakeError
from roadie.logs import configure_logging
from roadie.retrying import TRANSIENT_ERROR_TYPES

log = logging.getLogger(__name__)


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
            *health.routes,
            Route("/metrics", telemetry.metrics),
            *openapi.routes,
            *jobs.routes,
            *batches.routes,
            *tracks.routes,
            *ledger.routes,
            *admin.routes,
            *queues.routes,
            *quotas.routes,
            *schedules.routes,
            *webhooks.routes,
            console.mount(),
        ],
        middleware=[Middleware(RequestContextMiddleware)],
        exception_handlers={
            IntakeError: on_intake_error,
            HTTPException: on_http_error,
            ClientDisconnect: on_client_disconnect,
            **dict.fromkeys(TRANSIENT_ERROR_TYPES, on_dependency_unavailable),
            Exception: on_unexpected_error,
        },
    )


app = create_app()
