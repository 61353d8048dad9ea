"""Per-client intake quotas: jobs accepted per minute and per day, counted in Redis by ``limits``.

A client's quota is its own (``api_clients.jobs_per_minute`` / ``jobs_per_day``, set by an admin at
run time) or, where that is null, the setting (``ROADIE_CLIENT_JOBS_PER_MINUTE`` / ``_PER_DAY``);
null there too means no quota. A request is charged once it passed validation, just before its
jobs are stored: one per job (a batch costs its jobs). Over a quota it is a 429 with
``Retry-After`` and nothing is stored; a quota of 0 refuses every request.

Counting is ``limits``' sliding window counter on Redis (``ROADIE_QUOTA_REDIS_URL``, by default the
broker when it is Redis). When that Redis does not answer, the request is accepted and the miss is
logged: the ledger, not the counter, is what must never refuse an accepted job.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import lru_cache

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.exceptions import RedisError
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models.platform import ApiClient, IdempotencyKey
from roadie.db import async_transaction
from roadie.jobs.intake import IntakeError
from roadie.settings import get_settings

log = logging.getLogger(__name__)


async def set_quota(
    session: AsyncSession, name: str, jobs_per_minute: int | None, jobs_per_day: int | None, actor: str
) -> ApiClient | None:
    """Give the live client of this name its own quota (None: the setting's); None when there is no such client.

    API processes see it once their key lookup cache expires (``ROADIE_API_KEY_CACHE_TTL_S``): no restart.
    """
    client = await session.scalar(
        update(ApiClient)
        .where(ApiClient.name == name, ApiClient.revoked_at.is_(None))
        .values(jobs_per_minute=jobs_per_minute, jobs_per_day=jobs_per_day)
        .returning(ApiClient)
    )
    if client is not None:
        log.info(
            "quota.changed",
            extra={"client": name, "by": actor, "jobs_per_minute": jobs_per_minute, "jobs_per_day": jobs_per_day},
        )
    return client


@dataclass(frozen=True)
class Quota:
    """Jobs a client may have accepted per minute and per day; None: no limit."""

    jobs_per_minute: int | None
    jobs_per_day: int | None


def quota_of(client: ApiClient) -> Quota:
    """The client's own quota, each part falling back to the setting."""
    settings = get_settings()
    return Quota(
        client.jobs_per_minute if client.jobs_per_minute is not None else settings.client_jobs_per_minute,
        client.jobs_per_day if client.jobs_per_day is not None else settings.client_jobs_per_day,
    )


class QuotaExceededError(IntakeError):
    """429: the client used its quota; ``retry_after_s`` is when the window lets it in again."""

    def __init__(self, window: str, limit: int, retry_after_s: int) -> None:
        super().__init__(429, "quota_exceeded", f"this API key may have {limit} jobs accepted per {window}")
        self.headers = {"Retry-After": str(retry_after_s)}


#: How long one Redis command may take before the request is let through uncounted.
STORAGE_TIMEOUT_S = 0.25
#: After the counter's Redis failed, requests go uncounted this long before it is tried again, so an
#: outage costs one timeout per API process per period, not one per request.
STORAGE_BACKOFF_S = 5.0


@dataclass
class _Breaker:
    """Until when this process counts nothing, after the counter's Redis failed."""

    open_until: float = 0.0


_breaker = _Breaker()


class QuotaStorageMissingError(Exception):
    """No Redis to count quotas in: the broker is not Redis and ROADIE_QUOTA_REDIS_URL is unset."""


@lru_cache(maxsize=1)
def _limiter() -> SlidingWindowCounterRateLimiter:
    """One per API process, made on first use, inside its event loop (which the Redis client binds to)."""
    settings = get_settings()
    url = settings.quota_redis_url or settings.celery_broker_url
    if not url.startswith(("redis://", "rediss://")):
        raise QuotaStorageMissingError("set ROADIE_QUOTA_REDIS_URL (redis://...) when the broker is not plain Redis")
    storage = RedisStorage(
        f"async+{url}",
        implementation="redispy",
        key_prefix="roadie:quota",
        socket_connect_timeout=STORAGE_TIMEOUT_S,
        socket_timeout=STORAGE_TIMEOUT_S,
        retry_on_timeout=False,
    )
    return SlidingWindowCounterRateLimiter(storage)


async def _replay(client: ApiClient, idempotency_key: str | None) -> bool:
    """Whether the request replays a stored Idempotency-Key: a replay creates nothing, so it costs nothing."""
    if idempotency_key is None:
        return False
    async with async_transaction() as session:
        stored = await session.scalar(
            select(IdempotencyKey.id).where(
                IdempotencyKey.client_id == client.id,
                IdempotencyKey.key == idempotency_key,
                IdempotencyKey.expires_at > func.now(),
            )
        )
    return stored is not None


async def charge(client: ApiClient, jobs: int, idempotency_key: str | None = None) -> None:
    """Count ``jobs`` against the client's quota, or raise QuotaExceededError.

    Not counted: a replay of a stored Idempotency-Key, and any request while the counter's Redis is
    unreachable or missing (logged as ``quota.storage_unavailable``).
    """
    quota = quota_of(client)
    windows: list[tuple[str, int, RateLimitItem]] = [
        (name, limit, item(limit))
        for name, limit, item in (
            ("minute", quota.jobs_per_minute, RateLimitItemPerMinute),
            ("day", quota.jobs_per_day, RateLimitItemPerDay),
        )
        if limit is not None
    ]
    if not windows or await _replay(client, idempotency_key):
        return
    for name, limit, _ in windows:
        if limit < jobs:  # a quota of 0, or a batch bigger than the whole window allows
            raise QuotaExceededError(name, limit, 60 if name == "minute" else 86_400)
    if time.monotonic() < _breaker.open_until:
        return
    key = str(client.id)
    try:
        limiter = _limiter()
        # Each hit counts only when it fits (atomically, in Redis). A refusal by the day's window after
        # the minute's counted leaves those jobs on the minute's count: the client is out of quota anyway.
        for name, limit, item in windows:
            if not await limiter.hit(item, key, cost=jobs):
                stats = await limiter.get_window_stats(item, key)
                raise QuotaExceededError(name, limit, max(1, math.ceil(stats.reset_time - time.time())))
    except (RedisError, OSError, QuotaStorageMissingError) as exc:
        _breaker.open_until = time.monotonic() + STORAGE_BACKOFF_S
        log.warning("quota.storage_unavailable", extra={"client": client.name, "error": type(exc).__name__})
