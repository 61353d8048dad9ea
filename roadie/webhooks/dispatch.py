"""Fan-out: each new event becomes one delivery per listening endpoint (and its callback_url), each
with its ``webhooks.deliver`` job, in one transaction with marking the event dispatched.

The relay runs it beside publishing (the triggers that write events NOTIFY the relay's channel), so
an event's delivery jobs reach the outbox moments after its fact commits, and a crash between the
two leaves the event undispatched, to be fanned out on the next round.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import CompoundSelect, Select, func, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from models.webhooks import WebhookDelivery, WebhookEndpoint, WebhookEvent
from roadie.db import transaction
from roadie.jobs.creation import enqueue
from roadie.jobs.intake import IntakeError, field_error
from roadie.jobs.types import job_types
from roadie.webhooks.urls import UnsafeUrl, check_url

#: Most events one round fans out.
DISPATCH_BATCH = 200


def default_endpoint(client_id: Any) -> Select[Any]:
    """A client's default endpoint, whose secret signs its jobs' callback_url deliveries: its oldest enabled one."""
    return (
        select(WebhookEndpoint.id)
        .where(WebhookEndpoint.client_id == client_id, WebhookEndpoint.enabled.is_(True))
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        .limit(1)
    )


def _targets(event_ids: list[uuid.UUID]) -> CompoundSelect[Any]:
    """(event, endpoint, url) for every listener of the events (the database's one definition of who
    listens), and for each callback_url, signed with its client's default endpoint."""
    listeners = (
        func.roadie_webhook_listeners(WebhookEvent.type, WebhookEvent.client_id)
        .table_valued("endpoint_id", "url")
        .lateral("listener")
    )
    subscribed = (
        select(WebhookEvent.id, listeners.c.endpoint_id, listeners.c.url)
        .join(listeners, true())
        .where(WebhookEvent.id.in_(event_ids))
    )
    signer = default_endpoint(WebhookEvent.client_id).lateral("signer")
    callbacks = (
        select(WebhookEvent.id, signer.c.id, WebhookEvent.callback_url)
        .join(signer, true())
        .where(WebhookEvent.id.in_(event_ids), WebhookEvent.callback_url.is_not(None))
    )
    return subscribed.union(callbacks)


def dispatch_events(limit: int = DISPATCH_BATCH) -> int:
    """Fan out up to ``limit`` undispatched events; returns how many deliveries were made."""
    deliver = job_types()["webhooks.deliver"]
    with transaction() as session:
        events = dict(
            session.execute(
                select(WebhookEvent.id, WebhookEvent.request_id)
                .where(WebhookEvent.dispatched_at.is_(None))
                .order_by(WebhookEvent.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
        )
        if not events:
            return 0
        made = 0
        for event_id, endpoint_id, url in session.execute(_targets(list(events))).all():
            delivery_id = uuid.uuid4()
            payload = {"delivery_id": str(delivery_id)}
            job = enqueue(session, deliver, payload, actor="webhooks", request_id=events[event_id])
            session.add(
                WebhookDelivery(id=delivery_id, event_id=event_id, endpoint_id=endpoint_id, url=url, job_id=job.id)
            )
            made += 1
        session.execute(update(WebhookEvent).where(WebhookEvent.id.in_(list(events))).values(dispatched_at=func.now()))
        return made


async def check_callback_url(session: AsyncSession, client_id: uuid.UUID, url: str, field: str) -> str:
    """A job's or a batch's callback_url, if Roadie may post to it and the client has a secret to sign with.

    422 naming ``field`` otherwise: an unsafe URL, or a client with no enabled webhook endpoint.
    """
    try:
        check_url(url)
    except UnsafeUrl as exc:
        raise IntakeError(422, "invalid_callback_url", f"callback_url {exc}", [field_error(field, str(exc))]) from None
    if await session.scalar(default_endpoint(client_id)) is None:
        reason = "needs a webhook endpoint to sign with: create one with POST /v1/webhooks first"
        raise IntakeError(422, "no_webhook_endpoint", f"callback_url {reason}", [field_error(field, reason)])
    return url
