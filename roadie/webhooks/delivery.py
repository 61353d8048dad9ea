"""One try at delivering one event to one URL: sign, POST, record what the receiver said.

Read without a lock, POST with no transaction open, then record the attempt, the delivery's state
and the endpoint's health in one short transaction. The job runtime retries on the schedule this
module asks for (``TransientError.retry_after_s``); the receiver drops duplicates by ``webhook-id``,
which is the event's id on every try.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import json
import logging
import ssl
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import certifi
import httpx
from sqlalchemy import func, select, update

from models.webhooks import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from roadie.db import transaction
from roadie.jobs.errors import PermanentError, TransientError
from roadie.retrying import scheduled_delay_s
from roadie.settings import get_settings
from roadie.webhooks import signing
from roadie.webhooks.urls import UnsafeUrl, resolve

log = logging.getLogger(__name__)

#: How much of a receiver's answer is kept with the attempt (and read at all).
EXCERPT_BYTES = 2048
USER_AGENT = "Roadie-Webhooks/1"


class Verdict(enum.StrEnum):
    DELIVERED = "delivered"  # 2xx
    RETRY = "retry"  # timeout, connection error, 429, 5xx, a name that does not resolve yet
    REJECTED = "rejected"  # any other answer (other 4xx, a redirect), or a URL Roadie refuses
    GONE = "gone"  # 410: the receiver asks to stop; the endpoint is disabled


@dataclass(frozen=True)
class Answer:
    verdict: Verdict
    status_code: int | None
    excerpt: str | None
    error: str | None
    latency_ms: int


@dataclass(frozen=True)
class Pending:
    """What one try needs, read before the network call."""

    delivery_id: uuid.UUID
    url: str
    event_id: uuid.UUID
    event_type: str
    body: str
    endpoint_id: uuid.UUID
    endpoint_enabled: bool
    secrets: list[str]
    read_at: dt.datetime  # the database's clock: the attempt's start and the signature's timestamp


@dataclass(frozen=True)
class Delivered:
    """A try's outcome as the job reports it."""

    delivery_id: uuid.UUID
    event_type: str
    verdict: Verdict
    latency_s: float
    result: dict[str, Any]


def message_id(event_id: uuid.UUID) -> str:
    """The ``webhook-id`` (and the body's ``id``): the same for every try and every endpoint."""
    return f"evt_{event_id.hex}"


def envelope(event: WebhookEvent) -> str:
    """The body receivers get: ``{id, type, timestamp, data}`` as compact JSON."""
    return json.dumps(
        {
            "id": message_id(event.id),
            "type": event.type,
            "timestamp": event.created_at.astimezone(dt.UTC).isoformat(),
            "data": event.data,
        },
        separators=(",", ":"),
        default=str,
    )


def load(delivery_id: uuid.UUID) -> Pending | str | None:
    """The delivery to try; None when it is gone (its endpoint deleted), its status when it is settled."""
    with transaction() as session:
        row = session.execute(
            select(WebhookDelivery, WebhookEvent, WebhookEndpoint, func.now())
            .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.id == delivery_id)
        ).one_or_none()
        if row is None:
            return None
        delivery, event, endpoint, now = row
        if delivery.status != "pending":
            return str(delivery.status)
        sealed = [endpoint.secret]
        if endpoint.previous_secret is not None and (endpoint.previous_secret_expires_at or now) > now:
            sealed.append(endpoint.previous_secret)
        return Pending(
            delivery_id=delivery.id,
            url=delivery.url,
            event_id=event.id,
            event_type=event.type,
            body=envelope(event),
            endpoint_id=endpoint.id,
            endpoint_enabled=endpoint.enabled,
            secrets=[signing.unseal(secret) for secret in sealed],
            read_at=now,
        )


def signed_headers(pending: Pending, now: dt.datetime) -> dict[str, str]:
    msg_id = message_id(pending.event_id)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signing.signature_header(pending.secrets, msg_id, now, pending.body),
    }


@lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """httpx's default verification (the certifi bundle), built once and shared by the pool's threads:
    building it took ~20 ms of CPU, which a client per POST otherwise paid on every delivery."""
    return ssl.create_default_context(cafile=certifi.where())


async def _post(url: str, headers: dict[str, str], body: str, server_name: str) -> tuple[int, bytes]:
    """POST and read at most EXCERPT_BYTES of the answer, undecoded (no decompression bomb), then hang up."""
    async with (
        httpx.AsyncClient(follow_redirects=False, trust_env=False, verify=_tls_context()) as client,
        client.stream("POST", url, headers=headers, content=body, extensions={"sni_hostname": server_name}) as answer,
    ):
        excerpt = b""
        async for chunk in answer.aiter_raw():
            excerpt += chunk
            if len(excerpt) >= EXCERPT_BYTES:
                break
        return answer.status_code, excerpt[:EXCERPT_BYTES]


def post(pending: Pending, now: dt.datetime) -> Answer:
    """One POST under one deadline for everything (lookup, connect, TLS, answer), whatever the receiver does."""
    timeout_s = get_settings().webhook_timeout_s
    started = time.monotonic()

    def answer(
        verdict: Verdict, status: int | None = None, excerpt: str | None = None, error: str | None = None
    ) -> Answer:
        return Answer(verdict, status, excerpt, error, round((time.monotonic() - started) * 1000))

    try:
        target = resolve(pending.url)
    except UnsafeUrl as exc:
        return answer(Verdict.REJECTED, error=f"refused: the URL {exc}")
    except OSError as exc:
        return answer(Verdict.RETRY, error=f"the host name did not resolve ({type(exc).__name__})")
    headers = signed_headers(pending, now) | {"host": target.host_header}
    try:
        status, raw = asyncio.run(
            asyncio.wait_for(_post(target.url, headers, pending.body, target.server_name), timeout_s)
        )
    except TimeoutError:
        return answer(Verdict.RETRY, error=f"no complete answer within {timeout_s:g} s")
    except httpx.HTTPError as exc:
        return answer(Verdict.RETRY, error=f"connection failed ({type(exc).__name__})")
    excerpt = raw.decode("utf-8", "replace")
    if 200 <= status < 300:
        return answer(Verdict.DELIVERED, status, excerpt)
    if status == 410:
        return answer(Verdict.GONE, status, excerpt, "the receiver answered 410 Gone")
    if status == 429 or status >= 500:
        return answer(Verdict.RETRY, status, excerpt, f"the receiver answered {status}")
    return answer(Verdict.REJECTED, status, excerpt, f"the receiver answered {status}")


def record(pending: Pending, attempt: int, started_at: dt.datetime, answer: Answer, final: bool) -> None:
    """The attempt, the delivery's state and the endpoint's health, in one transaction."""
    settings = get_settings()
    with transaction() as session:
        delivery = session.get(WebhookDelivery, pending.delivery_id, with_for_update=True)
        if delivery is None:
            return
        delivery.attempts += 1
        session.add(
            WebhookAttempt(
                delivery_id=delivery.id,
                number=delivery.attempts,
                started_at=started_at,
                status_code=answer.status_code,
                latency_ms=answer.latency_ms,
                response_excerpt=answer.excerpt,
                error=answer.error,
            )
        )
        delivery.last_status_code, delivery.last_error = answer.status_code, answer.error
        endpoint = WebhookEndpoint.__table__.c
        if answer.verdict is Verdict.DELIVERED:
            delivery.status, delivery.delivered_at = "delivered", func.now()
            session.execute(
                update(WebhookEndpoint)
                .where(endpoint.id == pending.endpoint_id, endpoint.failing_since.is_not(None))
                .values(failing_since=None)
            )
            return
        if final:
            delivery.status = "failed"
        session.execute(
            update(WebhookEndpoint)
            .where(endpoint.id == pending.endpoint_id, endpoint.failing_since.is_(None))
            .values(failing_since=func.now())
        )
        if answer.verdict is Verdict.GONE:
            _disable(session, pending.endpoint_id, "the receiver answered 410 Gone")
        else:
            failing_for = dt.timedelta(seconds=settings.webhook_disable_after_s)
            _disable(
                session,
                pending.endpoint_id,
                f"every delivery failed for {failing_for}; the last: {answer.error}",
                failing_before=func.now() - failing_for,
            )


def _disable(session: Any, endpoint_id: uuid.UUID, reason: str, failing_before: Any = None) -> None:
    endpoint = WebhookEndpoint.__table__.c
    condition = [endpoint.id == endpoint_id, endpoint.enabled.is_(True)]
    if failing_before is not None:
        condition.append(endpoint.failing_since < failing_before)
    disabled = session.execute(
        update(WebhookEndpoint).where(*condition).values(enabled=False, disabled_reason=reason).returning(endpoint.id)
    ).first()
    if disabled is not None:
        log.warning("webhooks.endpoint_disabled", extra={"endpoint_id": str(endpoint_id), "reason": reason})


def deliver(delivery_id: uuid.UUID, attempt: int) -> Delivered | None:
    """Try the delivery once (``attempt``: its job's try, from 1); raise to be retried or to fail.

    None when there was nothing to try: the delivery is settled or gone.
    """
    pending = load(delivery_id)
    if not isinstance(pending, Pending):
        return None
    started_at = pending.read_at
    if not pending.endpoint_enabled:
        answer = Answer(Verdict.REJECTED, None, None, "the endpoint is disabled", 0)
    else:
        answer = post(pending, started_at)
    retry_after = (
        scheduled_delay_s(get_settings().webhook_retry_schedule_s, attempt) if answer.verdict is Verdict.RETRY else None
    )
    final = answer.verdict is not Verdict.DELIVERED and retry_after is None
    record(pending, attempt, started_at, answer, final)
    outcome = Delivered(
        pending.delivery_id,
        pending.event_type,
        answer.verdict,
        answer.latency_ms / 1000,
        {"delivery_id": str(pending.delivery_id), "status_code": answer.status_code, "attempt": attempt},
    )
    if answer.verdict is Verdict.DELIVERED:
        return outcome
    message = answer.error or answer.verdict.value
    if retry_after is not None:
        raise DeliveryRetryError(message, outcome, retry_after)
    code = {Verdict.GONE: "webhook_gone", Verdict.RETRY: "webhook_gave_up"}.get(answer.verdict, "webhook_rejected")
    raise DeliveryFailedError(message, outcome, code)


class DeliveryRetryError(TransientError):
    code = "webhook_retrying"

    def __init__(self, message: str, outcome: Delivered, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.outcome = outcome


class DeliveryFailedError(PermanentError):
    def __init__(self, message: str, outcome: Delivered, code: str) -> None:
        super().__init__(message, code=code)
        self.outcome = outcome
