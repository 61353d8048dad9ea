"""Getting jobs from the ledger onto the broker, and back onto it when the broker lost them.

- the relay publishes outbox rows after their transaction committed (woken by NOTIFY);
- the sweeper re-sends jobs that were published but never started (a flushed Redis);
- the reaper re-queues jobs whose worker stopped beating (SIGKILL, OOM), up to a limit.
"""

from __future__ import annotations

import datetime as dt
import logging
import select as io_select
import threading
import uuid
from functools import lru_cache
from typing import Any, NamedTuple, cast

import psycopg
from sqlalchemy import and_, bindparam, case, delete, exists, func, null, or_, select, union_all, update
from sqlalchemy.engine import CursorResult, make_url

from models.controls import paused
from models.platform import IdempotencyKey, Job, JobAttempt, JobEvent, JobStatus, OutboxMessage
from roadie.db import PreparedStatement, connect_args, sync_engine, transaction
from roadie.logs import REQUEST_ID_HEADER
from roadie.settings import get_settings
from roadie.webhooks.dispatch import dispatch_events

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "roadie_outbox"
#: The sweeper waits republish_after_s * 2**(n-1) before the n-th re-send, at most this long.
MAX_REPUBLISH_WAIT_S = 3600
#: Most outbox rows one relay transaction takes.
RELAY_BATCH = 500
#: After a batch short of RELAY_BATCH, how long the relay lets the next one gather. Under a steady
#: stream of requests it otherwise took a handful of rows per round, and the fixed cost of a round
#: (a transaction, a broker round trip) made up a third of its CPU per job.
RELAY_LINGER_S = 0.02
#: Most jobs one ``jobs.published`` log line lists.
LOG_CHUNK = 100


class _Due(NamedTuple):
    """An outbox row the relay took, with what publishing its job needs."""

    outbox_id: int
    job_id: uuid.UUID
    job_type: str | None  # None: held, its queue or job type is paused
    queue: str
    request_id: str | None
    priority: int | None


@lru_cache(maxsize=1)
def _take_due_statement() -> PreparedStatement:
    """Take up to ``limit`` due outbox rows, mark their jobs published or hold the paused ones (built once).

    The rows are locked (others skip them), deleted and the jobs stamped in the caller's transaction,
    which commits only after the messages are on the broker. Rows of a paused queue or job type are
    marked held instead (they come back as rows without a type) and leave the relay's index until resumed.
    """
    due = (
        select(OutboxMessage.id, paused(Job.queue, Job.type).label("paused"))
        .join(Job, Job.id == OutboxMessage.job_id)
        .where(OutboxMessage.available_at <= func.now(), OutboxMessage.held.is_(False))
        .order_by(OutboxMessage.id)
        .limit(bindparam("limit"))
        .with_for_update(of=OutboxMessage, skip_locked=True)
        .cte("due")
    )
    held = (
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(select(due.c.id).where(due.c.paused)))
        .values(held=True)
        .returning(OutboxMessage.id, OutboxMessage.job_id)
        .cte("held")
    )
    taken = (
        delete(OutboxMessage)
        .where(OutboxMessage.id.in_(select(due.c.id).where(~due.c.paused)))
        .returning(OutboxMessage.id, OutboxMessage.job_id)
        .cte("taken")
    )
    marked = (
        update(Job)
        .where(Job.id.in_(select(taken.c.job_id)))
        .values(
            published_at=func.now(),
            publish_count=Job.publish_count + 1,
            # A delayed job that came due is on its way to a worker now, like any queued job.
            status=case((Job.status == JobStatus.SCHEDULED, JobStatus.QUEUED.value), else_=Job.status),
        )
        .returning(Job.id, Job.type, Job.queue, Job.request_id, Job.priority)
        .cte("marked")
    )
    published = select(
        taken.c.id, taken.c.job_id, marked.c.type, marked.c.queue, marked.c.request_id, marked.c.priority
    ).join(marked, marked.c.id == taken.c.job_id)
    kept = select(held.c.id, held.c.job_id, null(), null(), null(), null())
    both = union_all(published, kept)
    return PreparedStatement(both.order_by(both.selected_columns[0]))


def relay_once(limit: int = RELAY_BATCH) -> int:
    """Publish due outbox rows and delete them (or hold them, paused), in one transaction; returns how many it took.

    A crash after publishing but before commit re-sends those rows: duplicates are dropped
    when a worker tries to claim a job that is no longer waiting.
    """
    from workers.app import app, broker_priority

    with sync_engine().begin() as connection:
        taken = [_Due(*row) for row in _take_due_statement().fetchall_on(connection, limit=limit)]
        rows = [row for row in taken if row.job_type is not None]
        if len(rows) < len(taken):
            log.info("jobs.held_paused", extra={"count": len(taken) - len(rows)})
        if not rows:
            return len(taken)
        # One pipelined round trip to the broker for the batch where the transport can (Redis);
        # a failed flush raises, so the rows stay in the outbox and this loop sends them again:
        # hence no per-message retry, and each queue is declared once per batch, not per message.
        with app.producer_or_acquire() as producer, producer.batch():
            for queue in {row.queue for row in rows}:
                producer.maybe_declare(app.amqp.queues[queue])
            for row in rows:
                job_id = str(row.job_id)
                app.send_task(
                    row.job_type,
                    args=[job_id],
                    task_id=f"{job_id}.{row.outbox_id}",
                    queue=row.queue,
                    priority=broker_priority(row.priority),
                    producer=producer,
                    headers={REQUEST_ID_HEADER: row.request_id} if row.request_id else None,
                    declare=[],
                    retry=False,
                    argsrepr=f"['{job_id}']",  # what Celery's saferepr of the args would say, at a fraction of the CPU
                )
    # A line per LOG_CHUNK jobs rather than per job, which cost a quarter of the relay's CPU; the
    # request ids keep each job's story greppable across the API, the relay and the worker.
    for start in range(0, len(rows), LOG_CHUNK):
        chunk = rows[start : start + LOG_CHUNK]
        log.info(
            "jobs.published",
            extra={
                "count": len(chunk),
                "job_ids": [str(row.job_id) for row in chunk],
                "request_ids": [row.request_id for row in chunk],
            },
        )
    return len(taken)


def relay_forever(stop: threading.Event | None = None) -> None:
    """Fan out new webhook events and drain the outbox, then sleep until NOTIFY or the poll interval
    (for retries coming due).

    A lost database or broker connection is logged and retried; the relay never exits on its own.
    """
    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            _relay_until_disconnected(stop)
        except psycopg.OperationalError:
            log.exception("relay.listen_connection_lost")
            stop.wait(1.0)


def _relay_until_disconnected(stop: threading.Event) -> None:
    settings = get_settings()
    url = make_url(settings.sqlalchemy_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True, **connect_args()) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        while not stop.is_set():
            sent = _dispatch_safely()
            try:
                sent += relay_once()
            except Exception:
                log.exception("relay.publish_failed")
                sent = 0
                stop.wait(1.0)
            if sent:
                if sent < RELAY_BATCH:
                    stop.wait(RELAY_LINGER_S)
                continue
            io_select.select([listener.fileno()], [], [], settings.relay_poll_interval_s)
            for _ in listener.notifies(timeout=0):
                pass


def _dispatch_safely() -> int:
    """Fan out webhook events; a failure is logged and retried next round, never stopping the publishing of jobs."""
    try:
        return dispatch_events()
    except Exception:
        log.exception("relay.dispatch_failed")
        return 0


def republish_stale() -> int:
    """Queue another send for jobs the broker seems to have lost; returns how many."""
    settings = get_settings()
    wait = func.least(
        MAX_REPUBLISH_WAIT_S, settings.republish_after_s * func.power(2, func.greatest(Job.publish_count - 1, 0))
    )
    overdue = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, wait)
    pending = exists().where(OutboxMessage.job_id == Job.id)
    with transaction() as session:
        job_ids = session.scalars(
            select(Job.id)
            .where(
                ~pending,
                or_(
                    and_(Job.status == JobStatus.QUEUED, or_(Job.published_at.is_(None), Job.published_at < overdue)),
                    and_(Job.status == JobStatus.RETRYING, Job.next_attempt_at < overdue),
                ),
            )
            .with_for_update(skip_locked=True)
            .limit(1000)
        ).all()
        session.add_all(OutboxMessage(job_id=job_id) for job_id in job_ids)
        if job_ids:
            log.warning("sweeper.republished", extra={"count": len(job_ids)})
        return len(job_ids)


def reap_lost() -> int:
    """Re-queue running jobs whose heartbeat expired, or fail them after too many deliveries."""
    settings = get_settings()
    with transaction() as session:
        lost = session.scalars(
            select(Job)
            .where(
                Job.status == JobStatus.RUNNING,
                Job.heartbeat_at < func.now() - dt.timedelta(seconds=settings.heartbeat_timeout_s),
            )
            .with_for_update(skip_locked=True)
            .limit(1000)
        ).all()
        for job in lost:
            session.execute(
                update(JobAttempt)
                .where(JobAttempt.lease_id == job.lease_id)
                .values(outcome="lost", finished_at=func.now(), error_code="worker_lost")
            )
            job.lease_id = None
            if job.run_attempts >= settings.max_deliveries:
                job.status, job.finished_at = JobStatus.FAILED, func.now()
                job.error_code = "worker_lost"
                job.error_message = f"the worker running this job was lost {job.run_attempts} times"
            else:
                job.status = JobStatus.QUEUED
                session.add(OutboxMessage(job_id=job.id))
            session.add(JobEvent(job_id=job.id, kind="reaped", attempt=job.attempts, detail={"status": job.status}))
        return len(lost)


def purge_expired_idempotency_keys() -> int:
    """Forget Idempotency-Keys past their published retention."""
    with transaction() as session:
        purged = session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at < func.now()))
        return cast("CursorResult[Any]", purged).rowcount
