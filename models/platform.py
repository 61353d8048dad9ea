"""The job ledger: the source of truth for every job. Celery only carries job ids."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import (
    ARRAY,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, created_at, updated_at, uuid_pk


class JobStatus(enum.StrEnum):
    SCHEDULED = "scheduled"  # delayed: only in the ledger until its run_at, when the relay publishes it
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    WAITING = "waiting"  # a parent job, off the workers, until one of its child jobs finishes
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @classmethod
    def finished(cls) -> frozenset[JobStatus]:
        return frozenset({cls.SUCCEEDED, cls.FAILED, cls.CANCELLED})


#: A job's priority: 0 (lowest) to 9 (highest); among the jobs waiting on a queue, higher ones go first.
PRIORITY_MIN, PRIORITY_DEFAULT, PRIORITY_MAX = 0, 5, 9

#: jobs: any job type; tracks: uploads (issue 3); plays/sales: listening and sale events, ledger: balances
#: and payouts (issue 5); admin: everything, plus re-runs.
SCOPES = (
    "jobs:write",
    "jobs:read",
    "jobs:rehearse",  # platform.echo: jobs that sleep or fail on purpose, for rehearsing operations
    "tracks:write",
    "plays:write",
    "sales:write",
    "ledger:read",
    "webhooks:write",  # webhook endpoints: create, change, delete, rotate secrets
    "webhooks:read",  # webhook endpoints and their deliveries
    "admin",
)


def _in_list(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


#: How one claim of a job ended; "waiting": the handler handed over to child jobs (see JobStatus.WAITING).
ATTEMPT_OUTCOMES = ("running", "succeeded", "failed", "retrying", "lost", "cancelled", "waiting")


class ApiClient(Base):
    """An upstream app or an operator; its key is stored only as a SHA-256 hash."""

    __tablename__ = "api_clients"
    __table_args__ = (
        CheckConstraint("scopes <@ ARRAY[" + ", ".join(f"'{s}'" for s in SCOPES) + "]::varchar[]", name="known_scopes"),
        CheckConstraint("jobs_per_minute >= 0 AND jobs_per_day >= 0", name="quotas_not_negative"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(100), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    created_at: Mapped[dt.datetime] = created_at()
    revoked_at: Mapped[dt.datetime | None]
    jobs_per_minute: Mapped[int | None] = mapped_column(
        Integer, comment="Its quota of accepted jobs per minute; null: ROADIE_CLIENT_JOBS_PER_MINUTE."
    )
    jobs_per_day: Mapped[int | None] = mapped_column(
        Integer, comment="Its quota of accepted jobs per day; null: ROADIE_CLIENT_JOBS_PER_DAY."
    )


class ConsoleSession(Base):
    """A signed-in admin console session; the cookie holds its random id, the table only that id's hash.

    Deleting the row (sign-out), passing ``expires_at`` or revoking the client's key ends the session at once.
    """

    __tablename__ = "console_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True, comment="SHA-256 (hex) of the cookie's id.")
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_clients.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = created_at()
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class Job(Base):
    """One job: what to run, how far it got, and how it ended."""

    __tablename__ = "jobs"
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - INSERT … RETURNING the server defaults
    __table_args__ = (
        CheckConstraint(_in_list("status", tuple(JobStatus)), name="known_status"),
        CheckConstraint("progress_percent BETWEEN 0 AND 100", name="progress_is_percent"),
        CheckConstraint(f"priority BETWEEN {PRIORITY_MIN} AND {PRIORITY_MAX}", name="priority_in_range"),
        CheckConstraint("attempts >= 0 AND run_attempts >= 0 AND run_attempts <= attempts", name="attempt_counts"),
        Index("ix_jobs_created_at_id", "created_at", "id"),
        Index("ix_jobs_status_created_at", "status", "created_at"),
        Index("ix_jobs_type_created_at", "type", "created_at"),
        Index("ix_jobs_running_heartbeat", "heartbeat_at", postgresql_where=text("status = 'running'")),
        Index(
            "ix_jobs_waiting_published",
            "published_at",
            postgresql_where=text("status IN ('queued', 'retrying')"),
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    type: Mapped[str] = mapped_column(String(100))
    queue: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_attempts: Mapped[int] = mapped_column(Integer, default=0, comment="Attempts since the last (re-)run.")
    max_attempts: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(
        SmallInteger, default=PRIORITY_DEFAULT, server_default=str(PRIORITY_DEFAULT), comment="0 lowest, 9 highest."
    )
    progress_percent: Mapped[int] = mapped_column(SmallInteger, default=0)
    progress_stage: Mapped[str | None] = mapped_column(String(100))
    result: Mapped[dict[str, Any] | None]
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_traceback: Mapped[str | None] = mapped_column(Text)
    client_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_clients.id"), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_id: Mapped[str | None] = mapped_column(
        String(128), comment="X-Request-ID of the request that created it; its log lines carry it."
    )
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    batch_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("batches.id", ondelete="RESTRICT"), index=True)
    callback_url: Mapped[str | None] = mapped_column(
        Text, comment="Where this job's events are also posted, signed with the client's default endpoint's secret."
    )
    lease_id: Mapped[uuid.UUID | None] = mapped_column(comment="The claim whose worker may finish the job.")
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()
    published_at: Mapped[dt.datetime | None]
    publish_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    heartbeat_at: Mapped[dt.datetime | None]
    next_attempt_at: Mapped[dt.datetime | None]
    run_at: Mapped[dt.datetime | None] = mapped_column(
        comment="When a delayed job became or becomes due; null: it was due when accepted."
    )

    client: Mapped[ApiClient | None] = relationship()
    children: Mapped[list[Job]] = relationship(back_populates="parent", order_by="Job.created_at")
    parent: Mapped[Job | None] = relationship(back_populates="children", remote_side=[id])
    attempt_rows: Mapped[list[JobAttempt]] = relationship(order_by="JobAttempt.number")
    events: Mapped[list[JobEvent]] = relationship(order_by="JobEvent.id")


class JobAttempt(Base):
    """One claim of a job by a worker, and how it ended."""

    __tablename__ = "job_attempts"
    __table_args__ = (
        UniqueConstraint("job_id", "number"),
        CheckConstraint(
            _in_list("outcome", ATTEMPT_OUTCOMES),
            name="known_outcome",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    lease_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    worker: Mapped[str] = mapped_column(String(255))
    message_id: Mapped[str | None] = mapped_column(String(255), comment="Broker message that delivered it.")
    started_at: Mapped[dt.datetime] = created_at()
    finished_at: Mapped[dt.datetime | None]
    outcome: Mapped[str] = mapped_column(String(16), default="running")
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)


class JobEvent(Base):
    """Audit trail of a job: created, re-run (who, when, which attempt), cancelled, reaped."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(100))
    attempt: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[dict[str, Any] | None]
    created_at: Mapped[dt.datetime] = created_at()


class OutboxMessage(Base):
    """A job waiting to be published to the broker; deleted once published.

    ``held``: its queue or job type is paused (see :mod:`roadie.jobs.pauses`); the relay skips it until resumed.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_available_at", "available_at", postgresql_where=text("NOT held")),
        Index("ix_outbox_held", "job_id", postgresql_where=text("held")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    available_at: Mapped[dt.datetime] = created_at()
    created_at: Mapped[dt.datetime] = created_at()
    held: Mapped[bool] = mapped_column(server_default="false")


class IdempotencyKey(Base):
    """An Idempotency-Key, scoped to its client, with the fingerprint of the first request and its job or batch."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("client_id", "key"),
        CheckConstraint("(job_id IS NULL) <> (batch_id IS NULL)", name="one_subject"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_clients.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    # Indexed: retention asks which jobs a live key keeps, and deleting a job cascades to its key.
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    batch_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = created_at()
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
