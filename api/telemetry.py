"""Request ids, request metrics and ``GET /metrics`` for the intake API.

Every request gets an id: the caller's ``X-Request-ID`` when it is a short printable token,
else a fresh one. It is bound to every log line of the request, returned in the response's
``X-Request-ID`` header and stored with any job the request creates.

``/metrics`` serves this process's metrics and gauges read from the ledger at scrape time:
waiting jobs and the age of the oldest per queue, the outbox backlog, the dead-letter
list (failed jobs) per type, and per webhook endpoint the age of its oldest undelivered event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import case, extract, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.platform import Job, JobEvent, JobStatus, OutboxMessage
from models.webhooks import WebhookDelivery, WebhookEndpoint
from roadie.db import async_transaction
from roadie.jobs import pauses
from roadie.jobs.types import QUEUES, job_types
from roadie.ledger.check import settlement_violations
from roadie.logs import bind, new_request_id, unbind, valid_request_id
from roadie.settings import get_settings

log = logging.getLogger("api.request")

REQUEST_SECONDS = Histogram(
    "roadie_http_request_duration_seconds",
    "Intake API request latency, by method, route template and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
JOBS_ACCEPTED = Counter("roadie_jobs_accepted", "Jobs the intake API accepted (replays excluded), by type.", ["type"])

#: Probes and scrapes are logged at DEBUG, so they do not drown the requests that matter.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: Where a handler leaves fields for its request's ``http.request`` line (see :func:`annotate`).
_LOG_FIELDS = "roadie.log_fields"


def annotate(request: Request, **fields: Any) -> None:
    """Add fields (the job accepted, its type, ...) to this request's ``http.request`` line.

    One line per request: a line of its own per accepted job cost the intake as much CPU as the
    access line.
    """
    request.scope.setdefault(_LOG_FIELDS, {}).update(fields)


class RequestContextMiddleware:
    """Binds the request id, echoes it in ``X-Request-ID``, logs and times every request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = valid_request_id(Headers(scope=scope).get("x-request-id")) or new_request_id()
        tokens = bind(request_id=request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            # Left bound: the outermost error handler logs this request's failure with its id.
            self._observe(scope, 500, started)
            raise
        self._observe(scope, status, started)
        unbind(tokens)

    def _observe(self, scope: Scope, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        route = self._route(scope)
        REQUEST_SECONDS.labels(scope["method"], route, str(status)).observe(elapsed)
        level = logging.DEBUG if scope["path"] in _QUIET_PATHS else logging.INFO
        log.log(
            level,
            "http.request",
            extra={
                "method": scope["method"],
                "path": scope["path"],
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                **scope.get(_LOG_FIELDS, {}),
            },
        )

    def _route(self, scope: Scope) -> str:
        """The route template (``/v1/jobs/{job_id}``), never the raw path: labels stay few."""
        route = scope.get("route")
        if isinstance(getattr(route, "path", None), str):
            return str(route.path)  # type: ignore[union-attr]
        routes: Sequence[BaseRoute] = getattr(scope.get("app"), "routes", ())  # Starlette < 0.4x sets no "route"
        for candidate in routes:
            match, _ = candidate.matches(scope)
            if match != Match.NONE and isinstance(getattr(candidate, "path", None), str):
                return str(candidate.path)  # type: ignore[attr-defined]
        return "<unmatched>"


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self.families


async def ledger_metrics() -> list[Metric]:
    """Gauges computed from the ledger now: queue depth and oldest wait, outbox backlog, dead letters."""
    depth = GaugeMetricFamily(
        "roadie_queue_depth", "Jobs waiting to run (queued, or retrying and due), by queue.", labels=["queue"]
    )
    oldest = GaugeMetricFamily(
        "roadie_queue_oldest_age_seconds",
        "How long the longest-waiting job of each queue has waited to run (0 when none waits).",
        labels=["queue"],
    )
    backlog = GaugeMetricFamily("roadie_outbox_backlog", "Outbox rows due for publishing that the relay has not sent.")
    backlog_age = GaugeMetricFamily(
        "roadie_outbox_oldest_age_seconds", "Age of the oldest due outbox row (0 when none is due)."
    )
    dead = GaugeMetricFamily(
        "roadie_dead_letter_jobs",
        "Failed jobs (the dead-letter list, re-runnable by admins), by type.",
        labels=["type"],
    )
    violated = GaugeMetricFamily(
        "roadie_ledger_violations",
        "Subjects (payouts, transfers, the books) breaking each settlement check of `roadie ledger check` now.",
        labels=["check"],
    )
    undelivered = GaugeMetricFamily(
        "roadie_webhook_oldest_undelivered_age_seconds",
        "Age of each webhook endpoint's oldest pending delivery (endpoints with none pending are absent).",
        labels=["endpoint"],
    )
    disabled = GaugeMetricFamily(
        "roadie_webhook_endpoints_disabled", "Webhook endpoints disabled (by their owner, a 410 or failures)."
    )
    up = GaugeMetricFamily("roadie_ledger_scrape_success", "1 if the ledger gauges were read, else 0.")
    try:
        async with async_transaction() as session:
            await session.execute(text("SET LOCAL statement_timeout = '5s'"))
            requeued_at = (
                select(func.max(JobEvent.created_at))
                .where(JobEvent.job_id == Job.id, JobEvent.kind.in_(("rerun", "reaped")))
                .scalar_subquery()
            )
            waiting_since = case(
                (Job.status == JobStatus.RETRYING, Job.next_attempt_at),
                else_=func.greatest(Job.created_at, requeued_at),
            )
            waiting = (
                await session.execute(
                    select(Job.queue, func.count(), func.max(extract("epoch", func.now() - waiting_since)))
                    .where(
                        (Job.status == JobStatus.QUEUED)
                        | ((Job.status == JobStatus.RETRYING) & (Job.next_attempt_at <= func.now()))
                    )
                    .group_by(Job.queue)
                )
            ).all()
            # A held row waits for its pause to be lifted, not for the relay: roadie_held_jobs counts it.
            due = (OutboxMessage.available_at <= func.now()) & OutboxMessage.held.is_(False)
            oldest_due = func.min(OutboxMessage.available_at).filter(due)
            outbox_count, outbox_age = (
                await session.execute(
                    select(
                        func.count().filter(due),
                        func.coalesce(extract("epoch", func.now() - oldest_due), 0),
                    )
                )
            ).one()
            failed = (
                await session.execute(
                    select(Job.type, func.count()).where(Job.status == JobStatus.FAILED).group_by(Job.type)
                )
            ).all()
            unsettled = await settlement_violations(session, get_settings())
            paused = await pause_metrics(session)
            pending = (
                await session.execute(  # the partial index ix_webhook_deliveries_pending holds exactly these rows
                    select(
                        WebhookDelivery.endpoint_id,
                        extract("epoch", func.now() - func.min(WebhookDelivery.created_at)),
                    )
                    .where(WebhookDelivery.status == "pending")
                    .group_by(WebhookDelivery.endpoint_id)
                )
            ).all()
            disabled_count = await session.scalar(
                select(func.count()).select_from(WebhookEndpoint).where(WebhookEndpoint.enabled.is_(False))
            )
    except Exception:
        log.warning("metrics.ledger_unavailable", exc_info=True)
        up.add_metric([], 0)
        return [up]
    by_queue: dict[str, tuple[int, float]] = dict.fromkeys(QUEUES, (0, 0.0))
    by_queue.update({queue: (count, max(float(age or 0), 0.0)) for queue, count, age in waiting})
    for queue, (count, age) in sorted(by_queue.items()):
        depth.add_metric([queue], count)
        oldest.add_metric([queue], age)
    backlog.add_metric([], outbox_count)
    backlog_age.add_metric([], max(float(outbox_age), 0.0))
    dead_by_type: dict[str, int] = dict.fromkeys(job_types(), 0)
    for job_type, count in failed:
        dead_by_type[job_type] = count
    for job_type, count in sorted(dead_by_type.items()):
        dead.add_metric([job_type], count)
    for check, count in unsettled.items():
        violated.add_metric([check], count)
    for endpoint_id, age in sorted(pending, key=lambda row: str(row[0])):
        undelivered.add_metric([str(endpoint_id)], max(float(age or 0), 0.0))
    disabled.add_metric([], disabled_count or 0)
    up.add_metric([], 1)
    return [depth, oldest, backlog, backlog_age, dead, violated, undelivered, disabled, *paused, up]


async def pause_metrics(session: AsyncSession) -> list[Metric]:
    """Whether each queue (and job type) is paused, and how many of its jobs the ledger holds for it."""
    queue_paused = GaugeMetricFamily("roadie_queue_paused", "1 while the queue is paused, else 0.", labels=["queue"])
    type_paused = GaugeMetricFamily("roadie_job_type_paused", "1 for each paused job type.", labels=["type"])
    held = GaugeMetricFamily(
        "roadie_held_jobs", "Jobs held in the outbox by a pause, by queue or job type.", labels=["kind", "target"]
    )
    for state in await pauses.states(session):
        if state.kind == "queue":
            queue_paused.add_metric([state.name], int(state.paused))
        else:
            type_paused.add_metric([state.name], 1)
        held.add_metric([state.kind, state.name], state.held)
    return [queue_paused, type_paused, held]


async def metrics(request: Request) -> Response:
    """Prometheus text format: this process's series, then the ledger's."""
    ledger = CollectorRegistry(auto_describe=False)
    ledger.register(_Families(await ledger_metrics()))
    body = generate_latest(REGISTRY) + generate_latest(ledger)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def count_accepted(job_type: str) -> None:
    JOBS_ACCEPTED.labels(job_type).inc()
