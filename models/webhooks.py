"""Webhooks and job batches: who wants to be told, what happened, and each try at telling them.

An event row is written by a database trigger in the transaction that records its fact (a job's
final status, a track's ``ready``, an NFT's ``finalized``, a payout's outcome, a batch's last job),
so it exists exactly when the fact does. The relay fans it out into deliveries, each delivered by a
``webhooks.deliver`` job.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    ARRAY,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, created_at, updated_at, uuid_pk

#: Every event type an endpoint may subscribe to, and the scope an endpoint's client needs for the
#: platform's own events (those no client asked for: payouts).
EVENT_TYPES = (
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "track.ready",
    "track.failed",
    "nft.minted",
    "payout.finalized",
    "payout.failed",
    "batch.completed",
)
DELIVERY_STATUSES = ("pending", "delivered", "failed")


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


class WebhookEndpoint(Base):
    """A URL an API client wants events posted to, with its signing secret (encrypted at rest).

    During a rotation the previous secret signs beside the new one until ``previous_secret_expires_at``.
    """

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        CheckConstraint(
            f"cardinality(events) > 0 AND events <@ ARRAY[{_quoted(EVENT_TYPES)}]::varchar[]", name="known_events"
        ),
        CheckConstraint("enabled OR disabled_reason IS NOT NULL", name="disabled_has_reason"),
        CheckConstraint(
            "(previous_secret IS NULL) = (previous_secret_expires_at IS NULL)", name="previous_secret_expires"
        ),
        Index("ix_webhook_endpoints_client_id_created_at", "client_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_clients.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    description: Mapped[str | None] = mapped_column(String(500))
    enabled: Mapped[bool] = mapped_column(default=True, server_default=sql_text("true"))
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    secret: Mapped[bytes] = mapped_column(LargeBinary, comment="The signing secret, Fernet-encrypted.")
    previous_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_expires_at: Mapped[dt.datetime | None]
    failing_since: Mapped[dt.datetime | None] = mapped_column(
        comment="First failed attempt since the last delivered one; the endpoint is disabled after a run of failures."
    )
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()


class WebhookEvent(Base):
    """A fact worth telling: its id is the ``webhook-id`` every delivery of it carries."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        CheckConstraint(f"type IN ({_quoted(EVENT_TYPES)})", name="known_type"),
        Index("ix_webhook_events_undispatched", "id", postgresql_where=sql_text("dispatched_at IS NULL")),
        Index("ix_webhook_events_client_id_created_at", "client_id", "created_at"),
    )

    # Written by triggers (SQL), hence a server default.
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4, server_default=func.gen_random_uuid())
    type: Mapped[str] = mapped_column(String(32))
    client_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_clients.id", ondelete="CASCADE"), comment="Whose fact it is; null: the platform's own."
    )
    callback_url: Mapped[str | None] = mapped_column(Text, comment="A job's own callback_url, besides endpoints.")
    data: Mapped[dict[str, Any]]
    request_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = created_at()
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(comment="When its deliveries were made.")


class WebhookDelivery(Base):
    """One event to one endpoint (or to a job's callback_url, signed with its endpoint's secret)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", "url"),
        CheckConstraint(f"status IN ({_quoted(DELIVERY_STATUSES)})", name="known_status"),
        Index("ix_webhook_deliveries_endpoint_id_created_at", "endpoint_id", "created_at"),
        Index(
            "ix_webhook_deliveries_pending",
            "endpoint_id",
            "created_at",
            postgresql_where=sql_text("status = 'pending'"),
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    endpoint_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()
    delivered_at: Mapped[dt.datetime | None]


class WebhookAttempt(Base):
    """One POST of a delivery: what the receiver answered, how fast, or why it failed."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime]
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    response_excerpt: Mapped[str | None] = mapped_column(Text, comment="The first 2 KB of the answer's body.")
    error: Mapped[str | None] = mapped_column(Text)


class Batch(Base):
    """Jobs submitted together; ``batch.completed`` is written once, by the last of them to finish.

    ``expected_jobs`` is how many jobs complete it: the jobs given at creation, or more when track
    uploads join it later. The counters are kept by a trigger on ``jobs``, under the batch row's lock.
    """

    __tablename__ = "batches"
    __table_args__ = (
        CheckConstraint("expected_jobs BETWEEN 1 AND 1000", name="expected_jobs_in_range"),
        CheckConstraint("total_jobs <= expected_jobs", name="not_over_full"),
        CheckConstraint(
            "succeeded + failed + cancelled <= total_jobs AND least(succeeded, failed, cancelled) >= 0",
            name="counts_in_range",
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_clients.id", ondelete="CASCADE"), index=True)
    expected_jobs: Mapped[int] = mapped_column(Integer)
    total_jobs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    succeeded: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cancelled: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    callback_url: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = created_at()
    completed_at: Mapped[dt.datetime | None]
