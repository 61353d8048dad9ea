"""The one Celery app. JSON only, late acks, prefetch 1: the broker carries job ids, the ledger the rest.

Pools (run one worker command per pool; see the README):
``media`` (CPU: transcode, analysis), ``ipfs`` (I/O), ``chain`` (mint, transfers),
``ledger`` (rewards, staking, royalties), ``indexer`` (a single consumer), ``default``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from celery import Celery, signals
from kombu.connection import Connection

from models.platform import PRIORITY_DEFAULT, PRIORITY_MAX
from roadie.db import dispose_engines, use_role
from roadie.heap import freeze_startup_heap
from roadie.settings import get_settings
from schedules.beat import beat_schedule
from workers import telemetry  # noqa: F401 - connects the JSON logging and metrics signal handlers
from workers.base import bind_job_types

#: Kombu's Redis transport keeps a queue's messages in one list per priority step and pops the lists
#: in order (0 first); ten steps give the API's ten priorities each a list of its own.
REDIS_PRIORITY_STEPS = list(range(PRIORITY_MAX + 1))
#: Between a queue's name and its step in a list's name (kombu's own default, stated so the two agree).
REDIS_PRIORITY_SEPARATOR = "\x06\x16"
if TYPE_CHECKING:
    from redis import Redis

VISIBILITY_TIMEOUT_S = 7200  # above the longest transcode; the ledger's reaper recovers lost jobs sooner
#: AMQP heartbeat: after a network cut RabbitMQ drops the dead connection within about two of these, so a
#: worker that reconnects is not refused the exclusive pidbox queue its old connection still holds.
BROKER_HEARTBEAT_S = 10


def create_app() -> Celery:
    settings = get_settings()
    app = Celery("roadie", broker=settings.celery_broker_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_ignore_result=True,  # results live in the job ledger
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # A leak guard (KiB of resident memory after a job); replacing children every N jobs instead
        # cost the default pool ~10% of its throughput. The compose file sets it per pool.
        worker_max_memory_per_child=1_048_576,
        worker_hijack_root_logger=False,
        # Task events (what `celery worker -E` turns on) are what Flower shows tasks from. Flower also
        # broadcasts enable_events every 5 s, but a task run before that broadcast reaches a freshly
        # started worker would be missing. Events go to a fanout exchange and are dropped when no monitor
        # listens. task_send_sent_event stays off: queued jobs are in the ledger, and a task-sent event
        # would add a second publish per job to the relay.
        worker_send_task_events=True,
        worker_consumer="workers.consumer:Consumer",  # sends those events in batches
        task_default_queue="default",
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        # A worker that loses the broker keeps reconnecting, never giving up, and retries a channel
        # error (such as RabbitMQ's 405 RESOURCE_LOCKED on the pidbox queue) instead of exiting.
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        broker_channel_error_retry=True,
        broker_heartbeat=BROKER_HEARTBEAT_S,
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            "priority_steps": REDIS_PRIORITY_STEPS,
            "sep": REDIS_PRIORITY_SEPARATOR,
            "queue_order_strategy": "priority",
        },
        # RabbitMQ: every queue is declared with x-max-priority (a queue declared before without it must
        # be deleted once, drained, for this to apply: see docs/controls.md).
        task_queue_max_priority=PRIORITY_MAX,
        # Beat's own tasks, and anything sent without a priority, rank as a default job.
        task_default_priority=broker_priority(PRIORITY_DEFAULT, settings.celery_broker_url),
        task_routes=_route,
        beat_schedule=beat_schedule(settings),
        beat_scheduler="schedules.beat:Scheduler",  # runs housekeeping in beat's own process
        timezone="UTC",
        enable_utc=True,
    )
    return app


def broker_priority(priority: int | None, broker_url: str | None = None) -> int:
    """A job's priority (0 lowest, 9 highest; None: the default) as the broker ranks messages.

    RabbitMQ delivers higher numbers first; kombu's Redis transport pops priority 0's list first.
    """
    ranked = PRIORITY_DEFAULT if priority is None else priority
    return PRIORITY_MAX - ranked if redis_broker(broker_url or get_settings().celery_broker_url) else ranked


@lru_cache(maxsize=8)
def redis_broker(url: str) -> bool:
    """Whether kombu talks to Redis at ``url`` (redis, rediss, sentinel, redis+socket): its transport says."""
    return bool(Connection(url).transport.driver_type == "redis")


def redis_queue_length(client: Redis, queue: str) -> int:
    """Messages waiting on ``queue`` on a Redis broker: its lists summed, one per priority step, as kombu names them."""
    names = [queue if step == 0 else f"{queue}{REDIS_PRIORITY_SEPARATOR}{step}" for step in REDIS_PRIORITY_STEPS]
    return sum(int(client.llen(name)) for name in names)


def _route(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> dict[str, str]:
    """Route a job's task to its type's queue; anything else (beat's ledger and indexer entries) to ``default``."""
    from roadie.jobs.types import job_types

    job_type = job_types().get(name)
    return {"queue": job_type.queue if job_type else "default"}


@signals.celeryd_init.connect
def _worker_role(**_: Any) -> None:
    """A worker's connections (its pool children's too) carry the worker's timeouts."""
    use_role("worker")


@signals.beat_init.connect
def _beat_role(**_: Any) -> None:
    use_role("beat")


@signals.worker_init.connect
def _freeze_before_the_pool_forks(**_: Any) -> None:
    """Frozen in the main process, start-up objects stay out of every child's collections too."""
    freeze_startup_heap()


@signals.worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    """A forked pool child must not share the parent's database connections."""
    dispose_engines()


app = create_app()
bind_job_types(app)
