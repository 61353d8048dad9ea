"""The baseline: a bare Starlette endpoint that only enqueues a no-op Celery task, and that task.

``uvicorn bench.bare_app:app`` serves ``POST /v1/jobs`` -> ``apply_async`` -> 202, with no database.
``celery -A bench.bare_app:celery_app worker`` runs the no-op task, which only counts itself in Redis so the
throughput benchmark can tell when every task ran. Same broker as Roadie (``ROADIE_BROKER_URL``),
JSON only, late acks, prefetch 1, results ignored.
"""

from __future__ import annotations

import os

import redis
from celery import Celery
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

BROKER_URL = os.environ.get("ROADIE_BROKER_URL", "redis://127.0.0.1:6379/14")
DONE_KEY = "bench:noop:done"

celery_app = Celery("bench_bare", broker=BROKER_URL)
celery_app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue="default",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_counter: redis.Redis | None = None


@celery_app.task(name="bench.noop", ignore_result=True, acks_late=True)
def noop() -> None:
    """Do nothing but count the run."""
    global _counter  # noqa: PLW0603 - one lazily made connection per pool process
    if _counter is None:
        _counter = redis.Redis.from_url(BROKER_URL)
    _counter.incr(DONE_KEY)


async def submit(request: Request) -> JSONResponse:
    result = noop.apply_async()
    return JSONResponse({"id": result.id}, status_code=202)


app = Starlette(routes=[Route("/v1/jobs", submit, methods=["POST"])])
