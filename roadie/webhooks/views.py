"""What an endpoint and its deliveries look like to the API, the CLI and the console.

The signing secret is in no view but the two answers that hand it out once: an endpoint's
creation and a rotation.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import Field

from models.webhooks import DELIVERY_STATUSES, EVENT_TYPES, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from roadie.jobs.views import View
from roadie.webhooks.delivery import message_id

EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
DeliveryStatus = Literal[DELIVERY_STATUSES]  # type: ignore[valid-type]


class EndpointView(View):
    """A webhook endpoint: where its client's events are posted, and whether they still are."""

    id: uuid.UUID
    client_id: uuid.UUID
    url: str
    events: list[EventType]
    description: str | None
    enabled: bool
    disabled_reason: str | None = Field(description="Why it was disabled (by its owner, a 410, or a run of failures).")
    failing_since: dt.datetime | None = Field(description="First failed attempt since the last delivered one.")
    previous_secret_expires_at: dt.datetime | None = Field(
        description="After a rotation, the old secret signs beside the new one until then."
    )
    created_at: dt.datetime
    updated_at: dt.datetime


class CreatedEndpoint(EndpointView):
    """The new endpoint and its signing secret, shown this once: store it to verify deliveries."""

    secret: str = Field(description="whsec_...: the Standard Webhooks signing secret. Not shown again.")


class RotatedSecret(View):
    """The endpoint's new signing secret, shown this once; the old one signs beside it until it expires."""

    id: uuid.UUID
    secret: str
    previous_secret_expires_at: dt.datetime | None


class EndpointList(View):
    endpoints: list[EndpointView]


class AttemptView(View):
    """One POST of a delivery: the receiver's status and the first 2 KB of its answer, or why it failed."""

    number: int
    started_at: dt.datetime
    status_code: int | None
    latency_ms: int
    response_excerpt: str | None
    error: str | None


class DeliveryView(View):
    """One event to one URL, with every attempt, oldest first."""

    id: uuid.UUID
    event_id: str = Field(description="The webhook-id every attempt carried (evt_...): receivers de-duplicate by it.")
    event_type: EventType
    url: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    job_id: uuid.UUID | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    attempt_history: list[AttemptView]


class DeliveryPage(View):
    """Deliveries, newest first; ``next_cursor`` asks for the next page (null on the last)."""

    deliveries: list[DeliveryView]
    next_cursor: str | None


class Resent(View):
    """The deliveries set back to pending, each with a new delivery job."""

    count: int
    delivery_ids: list[uuid.UUID]


def endpoint_view(endpoint: WebhookEndpoint) -> EndpointView:
    return EndpointView.model_validate(endpoint, from_attributes=True)


def delivery_view(delivery: WebhookDelivery, event_type: str, attempts: list[WebhookAttempt]) -> DeliveryView:
    return DeliveryView(
        id=delivery.id,
        event_id=message_id(delivery.event_id),
        event_type=event_type,
        url=delivery.url,
        status=delivery.status,
        attempts=delivery.attempts,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        job_id=delivery.job_id,
        created_at=delivery.created_at,
        delivered_at=delivery.delivered_at,
        attempt_history=[AttemptView.model_validate(attempt, from_attributes=True) for attempt in attempts],
    )
