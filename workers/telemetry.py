"""Logs and metrics of the Celery processes (workers and beat), wired through Celery's signals.

Logging: Celery's ``setup_logging`` signal hands logging to :func:`roadie.logs.configure_logging`
(Celery then installs no handler of its own and redirects no output); the worker's banner
becomes one JSON line. Each task runs with the request id from its message headers bound (or
its task id for a task beat sent), plus its job id, so every line it writes, and every job it
spawns, carries that id.

Metrics: prefork runs tasks in pool children, so the worker uses prometheus_client's
multiprocess mode. The main process sets ``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary
folder unless the operator set one) and switches the library to file-backed values in
``worker_init``, before any pool child is forked; each child writes its own files, and the
main process serves their sum on ``ROADIE_WORKER_METRICS_PORT``. Counts survive recycled
children (``worker_max_memory_per_child``) and start from zero when the worker restarts.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from celery import signals

from roadie import logs
from roadie.settings import get_settings

log = logging.getLogger("workers.telemetry")

#: How one delivery of a job ended, as counted by ``roadie_job_attempts_total{outcome}``.
OUTCOMES = ("succeeded", "failed", "retried", "cancelled", "error")
_STATUS_OUTCOME = {
    "succeeded": "succeeded",
    "failed": "failed",
    "retrying": "retried",
    "cancelled": "cancelled",
    "waiting": "waiting",  # a parent handed over to its children (queued: and one had already finished)
    "queued": "waiting",
}


#: Why a delivery was dropped, as counted by ``roadie_job_deliveries_dropped_total{reason}``.
DROP_REASONS = ("duplicate", "lease_lost", "not_run")


@dataclass
class _WorkerMetrics:
    attempts: Any
    run_seconds: Any
    dropped: Any
    webhook_deliveries: Any
    webhook_seconds: Any
    server: Any = None
    directory: str | None = None
    owns_directory: bool = False


_metrics: dict[str, _WorkerMetrics] = {}


def outcome_of(status: str) -> str | None:
    """The counted outcome of a job status ``execute`` returned."""
    return _STATUS_OUTCOME.get(status)


def observe(job_type: str, outcome: str, seconds: float) -> None:
    """Count one run of a job and its run time (no-op when worker metrics are off)."""
    metrics = _metrics.get("worker")
    if metrics is not None:
        metrics.attempts.labels(job_type, outcome).inc()
        metrics.run_seconds.labels(job_type).observe(seconds)


def count_dropped(job_type: str, reason: str) -> None:
    """Count one dropped delivery by its reason (no-op when worker metrics are off)."""
    metrics = _metrics.get("worker")
    if metrics is not None:
        metrics.dropped.labels(job_type, reason).inc()


def observe_webhook(event_type: str, verdict: str, seconds: float) -> None:
    """Count one try of a webhook delivery by event type and verdict, and its POST's latency."""
    metrics = _metrics.get("worker")
    if metrics is not None:
        metrics.webhook_deliveries.labels(event_type, verdict).inc()
        metrics.webhook_seconds.labels(event_type).observe(seconds)


def start_metrics(job_type_names: list[str]) -> None:
    """In the worker's main process, before the pool forks: multiprocess mode and the HTTP port."""
    settings = get_settings()
    if settings.worker_metrics_port == 0 or "worker" in _metrics:
        return
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    owns = not directory
    if not directory:
        directory = tempfile.mkdtemp(prefix="roadie-worker-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        # prometheus_client chose its value class at import, possibly before the variable was set.
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, start_http_server

    metrics = _WorkerMetrics(
        attempts=Counter(
            "roadie_job_attempts",
            "Job runs by type and outcome (succeeded, failed, retried, cancelled, error).",
            ["type", "outcome"],
            registry=None,
        ),
        run_seconds=Histogram(
            "roadie_job_run_seconds",
            "Run time of one delivery of a job (claim, handler, outcome), by type.",
            ["type"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=None,
        ),
        dropped=Counter(
            "roadie_job_deliveries_dropped",
            "Deliveries that recorded nothing, by type and reason: duplicate (another delivery ran or runs "
            "the job), lease_lost (the outcome was refused: the job had been taken over), not_run.",
            ["type", "reason"],
            registry=None,
        ),
        webhook_deliveries=Counter(
            "roadie_webhook_deliveries",
            "Tries of webhook deliveries by event type and verdict (delivered, retry, rejected, gone).",
            ["event_type", "verdict"],
            registry=None,
        ),
        webhook_seconds=Histogram(
            "roadie_webhook_delivery_seconds",
            "How long one webhook POST took, from lookup to the answer read, by event type.",
            ["event_type"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=None,
        ),
        directory=directory,
        owns_directory=owns,
    )
    for name in job_type_names:  # every series exists from the start, at zero
        metrics.run_seconds.labels(name)
        for outcome in OUTCOMES:
            metrics.attempts.labels(name, outcome)
        for reason in DROP_REASONS:
            metrics.dropped.labels(name, reason)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    try:
        metrics.server, _ = start_http_server(
            settings.worker_metrics_port, addr=settings.worker_metrics_host, registry=registry
        )
    except OSError as exc:
        log.warning(
            "worker.metrics_port_unavailable",
            extra={"port": settings.worker_metrics_port, "error": str(exc)},
        )
    else:
        log.info(
            "worker.metrics_serving",
            extra={"host": settings.worker_metrics_host, "port": settings.worker_metrics_port},
        )
    _metrics["worker"] = metrics


def stop_metrics() -> None:
    metrics = _metrics.pop("worker", None)
    if metrics is None:
        return
    if metrics.server is not None:
        metrics.server.shutdown()
        metrics.server.server_close()
    if metrics.owns_directory and metrics.directory:
        shutil.rmtree(metrics.directory, ignore_errors=True)


@signals.setup_logging.connect
def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    """Celery's own logging set-up is replaced by ours (in the worker, its pool children and beat)."""
    if not logs.is_configured():
        arguments = sys.argv[1:]
        logs.configure_logging("beat" if "beat" in arguments else "worker" if "worker" in arguments else "celery")


#: Celery's per-task INFO lines ("Task ... received", "Task ... succeeded in ...") repeat what the
#: ledger records and ``job.succeeded`` logs; their warnings and errors are kept.
_CELERY_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


@signals.celeryd_init.connect
def _worker_logging(**_: Any) -> None:
    """Early in a worker's start, so even its start-up warnings are JSON."""
    logs.configure_logging("worker")
    for name in _CELERY_TASK_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@signals.beat_init.connect
def _beat_logging(**_: Any) -> None:
    logs.set_service("beat")


def _say_as_json(msg: str, f: Any = None) -> None:
    """Celery's signal-handler messages ("worker: Warm shutdown (MainProcess)") as JSON lines on stderr."""
    line = logs.json_line(msg.strip(), level="warning", logger="celery.apps.worker") + "\n"
    with suppress(OSError):
        os.write(2, line.encode())


@signals.celeryd_after_setup.connect
def _banner_as_json(sender: str, instance: Any, **_: Any) -> None:
    """The worker's start-up banner as one log line instead of free text on stdout."""
    instance.quiet = True
    from celery.apps import worker as worker_program

    if hasattr(worker_program, "safe_say"):  # it writes raw text straight to the file descriptor
        worker_program.safe_say = _say_as_json
    logs.set_service("worker")
    log.info(
        "worker.starting",
        extra={
            "hostname": sender,
            "queues": sorted(instance.app.amqp.queues.consume_from or ()),
            "concurrency": instance.concurrency,
            "pool": getattr(instance.pool_cls, "__module__", str(instance.pool_cls)),
        },
    )


@signals.worker_init.connect
def _worker_metrics(**_: Any) -> None:
    from roadie.jobs.types import job_types

    start_metrics(sorted(job_types()))


@signals.worker_shutdown.connect
def _worker_metrics_stop(**_: Any) -> None:
    stop_metrics()


@signals.task_prerun.connect
def _bind_task_context(task_id: str, task: Any, args: Any = None, **_: Any) -> None:
    """The job's request id (from the message headers) and ids on every line the task writes."""
    logs.clear()
    request_id = logs.valid_request_id(task.request.get(logs.REQUEST_ID_HEADER)) or task_id
    values: dict[str, Any] = {"request_id": request_id, "task": task.name, "task_id": task_id}
    if getattr(task, "job_type", None) is not None and args:  # a job's task: its one argument is the job id
        values["job_id"] = str(args[0])
    logs.bind(**values)


@signals.task_postrun.connect
def _clear_task_context(**_: Any) -> None:
    logs.clear()
