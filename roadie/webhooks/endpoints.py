"""Webhook endpoints and their deliveries: the one service behind the API, the CLI and the console.

A client sees and changes only its own endpoints; an admin (or the CLI, as the operator: no client)
sees every one. The plaintext secret leaves this module twice, as the return value of
:func:`create` and :func:`rotate_secret`, and is never logged. A resend sets a delivery back to
``pending`` and enqueues its new ``webhooks.deliver`` job in the caller's transaction, so the two
commit together or not at all.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Select, func, select, tuple_
from sqlalchemy import update as sql_update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from models.platform import ApiClient
from models.webhooks import EVENT_TYPES, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from roadie.jobs.creation import enqueue
from roadie.jobs.intake import IntakeError, decode_cursor, encode_cursor, field_error
from roadie.jobs.types import job_types
from roadie.settings import get_settings
from roadie.webhooks import signing
from roadie.webhooks.urls import UnsafeUrl, check_url
from roadie.webhooks.views import DeliveryView, delivery_view

log = logging.getLogger(__name__)

#: Most deliveries one "resend every failed delivery" sets going, oldest first.
RESEND_LIMIT = 1000


def _sees_all(client: ApiClient | None) -> bool:
    return client is None or "admin" in client.scopes


def checked_url(url: str) -> str:
    try:
        return check_url(url)
    except UnsafeUrl as exc:
        raise IntakeError(422, "invalid_url", f"url {exc}", [field_error("url", f"{exc}")]) from None


def checked_events(events: Sequence[str]) -> list[str]:
    """The events, each once, in EVENT_TYPES order; 422 naming ``events`` if empty or unknown."""
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown or not events:
        reason = f"must be a non-empty list of {', '.join(EVENT_TYPES)}"
        if unknown:
            reason += f"; unknown: {', '.join(unknown)}"
        raise IntakeError(422, "validation_error", f"events {reason}", [field_error("events", reason)])
    return [event for event in EVENT_TYPES if event in events]


async def _reloaded(session: AsyncSession, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """Flushed and read back: the server's timestamps filled in."""
    await session.flush()
    await session.refresh(endpoint)
    return endpoint


async def create(
    session: AsyncSession, client: ApiClient, url: str, events: Sequence[str], description: str | None = None
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint of ``client``, and its plaintext secret (shown to the caller once, stored sealed)."""
    secret = signing.new_secret()
    endpoint = WebhookEndpoint(
        client_id=client.id,
        url=checked_url(url),
        events=checked_events(events),
        description=description,
        secret=signing.seal(secret),
    )
    session.add(endpoint)
    await _reloaded(session, endpoint)
    log.info("webhooks.endpoint_created", extra={"endpoint_id": str(endpoint.id), "client": client.name})
    return endpoint, secret


async def list_endpoints(session: AsyncSession, client: ApiClient | None) -> list[WebhookEndpoint]:
    """The client's endpoints (every one for an admin or the operator), oldest first."""
    query = select(WebhookEndpoint).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    if not _sees_all(client):
        assert client is not None
        query = query.where(WebhookEndpoint.client_id == client.id)
    return list((await session.scalars(query)).all())


async def delivery_counts(session: AsyncSession) -> dict[uuid.UUID, dict[str, int]]:
    """Each endpoint's deliveries pending and failed (delivered ones are not counted: they are most)."""
    rows = await session.execute(
        select(WebhookDelivery.endpoint_id, WebhookDelivery.status, func.count())
        .where(WebhookDelivery.status.in_(("pending", "failed")))
        .group_by(WebhookDelivery.endpoint_id, WebhookDelivery.status)
    )
    counts: dict[uuid.UUID, dict[str, int]] = {}
    for endpoint_id, status, count in rows:
        counts.setdefault(endpoint_id, {})[status] = count
    return counts


async def find(
    session: AsyncSession, endpoint_id: uuid.UUID, client: ApiClient | None, *, lock: bool = False
) -> WebhookEndpoint:
    """The endpoint, if the client may see it; else 404 (another client's endpoint is not admitted to exist)."""
    query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
    if not _sees_all(client):
        assert client is not None
        query = query.where(WebhookEndpoint.client_id == client.id)
    if lock:
        query = query.with_for_update()
    endpoint = await session.scalar(query.execution_options(populate_existing=True))
    if endpoint is None:
        raise IntakeError(404, "not_found", f"no webhook endpoint {endpoint_id}")
    return endpoint


@dataclass(frozen=True)
class Changes:
    """What an update changes; None leaves a field as it is (``description`` is cleared with ``""``)."""

    url: str | None = None
    events: Sequence[str] | None = None
    enabled: bool | None = None
    description: str | None = None


async def _follow_url(session: AsyncSession, endpoint_id: uuid.UUID, old_url: str, new_url: str) -> None:
    """Deliveries not yet delivered to the endpoint's old URL go to its new one: tries still to come, and re-sends.

    A job's own callback_url deliveries keep theirs; an event that already has a delivery to the new
    URL keeps both as they are (one event, one delivery per URL).
    """
    other = aliased(WebhookDelivery)
    taken = (
        select(other.id)
        .where(other.event_id == WebhookDelivery.event_id, other.endpoint_id == endpoint_id, other.url == new_url)
        .exists()
    )
    await session.execute(
        sql_update(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.url == old_url,
            WebhookDelivery.status != "delivered",
            ~taken,
        )
        .values(url=new_url)
    )


async def update(session: AsyncSession, endpoint: WebhookEndpoint, changes: Changes, actor: str) -> WebhookEndpoint:
    """Change the endpoint. Disabling records who did; re-enabling forgets why it was disabled and its failures."""
    if changes.url is not None and changes.url != endpoint.url:
        old_url, endpoint.url = endpoint.url, checked_url(changes.url)
        await _follow_url(session, endpoint.id, old_url, endpoint.url)
    if changes.events is not None:
        endpoint.events = checked_events(changes.events)
    if changes.description is not None:
        endpoint.description = changes.description or None
    if changes.enabled is True and not endpoint.enabled:
        endpoint.enabled, endpoint.disabled_reason, endpoint.failing_since = True, None, None
    elif changes.enabled is False and endpoint.enabled:
        endpoint.enabled, endpoint.disabled_reason = False, f"disabled by {actor}"
    await _reloaded(session, endpoint)
    log.info("webhooks.endpoint_updated", extra={"endpoint_id": str(endpoint.id), "actor": actor})
    return endpoint


async def delete(session: AsyncSession, endpoint: WebhookEndpoint, actor: str) -> None:
    """Delete the endpoint with its deliveries; their queued jobs find nothing to do."""
    await session.delete(endpoint)
    await session.flush()
    log.info("webhooks.endpoint_deleted", extra={"endpoint_id": str(endpoint.id), "actor": actor})


async def rotate_secret(session: AsyncSession, endpoint: WebhookEndpoint, actor: str) -> tuple[WebhookEndpoint, str]:
    """A new secret, returned once; the current one signs beside it for the configured overlap.

    With no overlap (0 s), or when rotating again, only the secret that was current is kept as the
    previous one: a receiver holds at most two.
    """
    secret = signing.new_secret()
    overlap_s = get_settings().webhook_secret_rotation_overlap_s
    if overlap_s > 0:
        expires = await session.scalar(select(func.now() + dt.timedelta(seconds=overlap_s)))  # before any change
        endpoint.previous_secret, endpoint.previous_secret_expires_at = endpoint.secret, expires
    else:
        endpoint.previous_secret = endpoint.previous_secret_expires_at = None
    endpoint.secret = signing.seal(secret)
    await _reloaded(session, endpoint)
    log.info("webhooks.secret_rotated", extra={"endpoint_id": str(endpoint.id), "actor": actor})
    return endpoint, secret


def _deliveries(endpoint_id: uuid.UUID) -> Select[WebhookDelivery, str]:
    return (
        select(WebhookDelivery, WebhookEvent.type)
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.endpoint_id == endpoint_id)
    )


async def _with_attempts(session: AsyncSession, rows: Sequence[tuple[WebhookDelivery, str]]) -> list[DeliveryView]:
    attempts: dict[uuid.UUID, list[WebhookAttempt]] = {delivery.id: [] for delivery, _ in rows}
    if attempts:
        found = await session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(list(attempts)))
            .order_by(WebhookAttempt.delivery_id, WebhookAttempt.number)
        )
        for attempt in found:
            attempts[attempt.delivery_id].append(attempt)
    return [delivery_view(delivery, event_type, attempts[delivery.id]) for delivery, event_type in rows]


async def deliveries(
    session: AsyncSession,
    endpoint: WebhookEndpoint,
    *,
    statuses: Sequence[str] = (),
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[DeliveryView], str | None]:
    """A page of the endpoint's deliveries, newest first, each with its attempts; and the next page's cursor."""
    query = _deliveries(endpoint.id)
    if statuses:
        query = query.where(WebhookDelivery.status.in_(statuses))
    if cursor:
        created, delivery_id = decode_cursor(cursor)
        query = query.where(tuple_(WebhookDelivery.created_at, WebhookDelivery.id) < tuple_(created, delivery_id))
    query = query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()).limit(limit + 1)
    rows = [(delivery, event_type) for delivery, event_type in (await session.execute(query)).all()]
    next_cursor = encode_cursor(rows[limit - 1][0]) if len(rows) > limit else None
    return await _with_attempts(session, rows[:limit]), next_cursor


async def find_delivery(
    session: AsyncSession, delivery_id: uuid.UUID, client: ApiClient | None, endpoint_id: uuid.UUID | None = None
) -> WebhookDelivery:
    """The delivery (of ``endpoint_id`` when given), locked, if the client may see its endpoint; else 404."""
    query = (
        select(WebhookDelivery)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.id == delivery_id)
        .with_for_update(of=WebhookDelivery)
        .execution_options(populate_existing=True)
    )
    if endpoint_id is not None:
        query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
    if not _sees_all(client):
        assert client is not None
        query = query.where(WebhookEndpoint.client_id == client.id)
    delivery = await session.scalar(query)
    if delivery is None:
        raise IntakeError(404, "not_found", f"no webhook delivery {delivery_id}")
    return delivery


async def _send_again(session: AsyncSession, delivery: WebhookDelivery, actor: str) -> None:
    """Back to pending, with a new delivery job in this transaction (its tries start over)."""
    deliver = job_types()["webhooks.deliver"]
    payload = {"delivery_id": str(delivery.id)}
    job = await session.run_sync(lambda sync: enqueue(sync, deliver, payload, actor=actor, detail={"resend": True}))
    delivery.status, delivery.delivered_at, delivery.job_id = "pending", None, job.id


async def _enabled(session: AsyncSession, endpoint_id: uuid.UUID) -> None:
    """409 when the endpoint is disabled: a resend would only be refused; enable it first."""
    enabled = await session.scalar(select(WebhookEndpoint.enabled).where(WebhookEndpoint.id == endpoint_id))
    if not enabled:
        raise IntakeError(409, "endpoint_disabled", "the endpoint is disabled: enable it before re-sending")


async def resend(session: AsyncSession, delivery: WebhookDelivery, actor: str) -> WebhookDelivery:
    """Send a delivered or failed delivery again (``delivery`` locked, see :func:`find_delivery`)."""
    if delivery.status == "pending":
        raise IntakeError(409, "delivery_pending", "the delivery is still being tried; it cannot be re-sent now")
    await _enabled(session, delivery.endpoint_id)
    await _send_again(session, delivery, actor)
    await session.flush()
    log.info("webhooks.resend", extra={"delivery_id": str(delivery.id), "actor": actor})
    return delivery


async def resend_failed(
    session: AsyncSession, endpoint: WebhookEndpoint, since: dt.datetime, until: dt.datetime, actor: str
) -> list[uuid.UUID]:
    """Send again every failed delivery of the endpoint made in [since, until), oldest first, up to RESEND_LIMIT.

    Rows another resend holds are skipped, so two operators pressing at once do not double a delivery.
    """
    if until <= since:
        reason = "must be after since"
        raise IntakeError(422, "validation_error", f"until {reason}", [field_error("until", reason)])
    await _enabled(session, endpoint.id)
    failed = (
        await session.scalars(
            select(WebhookDelivery)
            .where(
                WebhookDelivery.endpoint_id == endpoint.id,
                WebhookDelivery.status == "failed",
                WebhookDelivery.created_at >= since,
                WebhookDelivery.created_at < until,
            )
            .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
            .limit(RESEND_LIMIT)
            .with_for_update(skip_locked=True)
        )
    ).all()
    for delivery in failed:
        await _send_again(session, delivery, actor)
    await session.flush()
    log.info("webhooks.resend_failed", extra={"endpoint_id": str(endpoint.id), "actor": actor, "count": len(failed)})
    return [delivery.id for delivery in failed]
