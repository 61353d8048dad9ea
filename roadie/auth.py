"""API keys: random, shown once, stored only as SHA-256 hashes, each with scopes.

Each API process remembers a successful lookup for ``ROADIE_API_KEY_CACHE_TTL_S`` seconds, so a
busy client costs one key lookup per interval rather than one per request. Revoking a key
(``api_clients.revoked_at``) therefore reaches reads within that interval; job creation checks
the live client row in the insert itself, so a revoked key creates no job from the moment of
revocation. Unknown keys are never cached.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from models.platform import SCOPES, ApiClient
from roadie.db import async_transaction
from roadie.settings import get_settings

KEY_PREFIX = "rk_live_"


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def validate_scopes(scopes: Iterable[str]) -> list[str]:
    chosen = sorted(set(scopes))
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown or not chosen:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(unknown) or 'none'}")
    return chosen


class KeyNameTakenError(ValueError):
    """Another client already has this name; names are how operators tell keys apart."""


def _new_key() -> tuple[str, str, str]:
    """A fresh key: the raw key (shown once), its display prefix and its hash (stored)."""
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    return raw_key, raw_key[: len(KEY_PREFIX) + 4], hash_key(raw_key)


async def create_client(session: AsyncSession, name: str, scopes: Iterable[str]) -> tuple[ApiClient, str]:
    """Create a client and return it with its key, which is never stored or shown again."""
    chosen = validate_scopes(scopes)
    raw_key, prefix, key_hash = _new_key()
    created = await session.scalar(
        insert(ApiClient)
        .values(name=name, key_prefix=prefix, key_hash=key_hash, scopes=chosen)
        .on_conflict_do_nothing(index_elements=[ApiClient.name])
        .returning(ApiClient)
    )
    if created is None:
        raise KeyNameTakenError(f"a key named {name!r} already exists")
    return created, raw_key


async def list_clients(session: AsyncSession) -> list[ApiClient]:
    """Every client, live and revoked, oldest first."""
    return list(await session.scalars(select(ApiClient).order_by(ApiClient.created_at, ApiClient.name)))


async def revoke_client(session: AsyncSession, name: str) -> ApiClient | None:
    """Revoke the live client of this name (None when there is none): it creates no job from now on."""
    return await session.scalar(
        update(ApiClient)
        .where(ApiClient.name == name, ApiClient.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(ApiClient)
    )


async def rotate_client(session: AsyncSession, name: str) -> tuple[ApiClient, str] | None:
    """Give the live client of this name a new key; the old one stops like a revoked one. None: no such client."""
    raw_key, prefix, key_hash = _new_key()
    client = await session.scalar(
        update(ApiClient)
        .where(ApiClient.name == name, ApiClient.revoked_at.is_(None))
        .values(key_prefix=prefix, key_hash=key_hash)
        .returning(ApiClient)
    )
    return (client, raw_key) if client is not None else None


#: Lookups remembered per process: key hash -> (monotonic expiry, the client's column values).
_lookups: dict[str, tuple[float, dict[str, Any]]] = {}
#: Past this many remembered keys the cache starts afresh (it is a cache, not a registry).
MAX_CACHED_KEYS = 10_000


def _detached_copy(columns: dict[str, Any]) -> ApiClient:
    """A client object of the caller's own, as if loaded by a session that has since closed."""
    client = ApiClient(**(columns | {"scopes": list(columns["scopes"])}))
    make_transient_to_detached(client)
    return client


async def authenticate(session: AsyncSession | None, raw_key: str) -> ApiClient | None:
    """The live client owning this key, or None; ``session`` None: look it up in a transaction of its own."""
    key_hash = hash_key(raw_key)
    remembered = _lookups.get(key_hash)
    if remembered is not None and remembered[0] > time.monotonic():
        return _detached_copy(remembered[1])
    if session is None:
        async with async_transaction() as own:
            return await authenticate(own, raw_key)
    client = await session.scalar(select(ApiClient).where(ApiClient.key_hash == key_hash))
    if client is None or client.revoked_at is not None:
        _lookups.pop(key_hash, None)
        return None
    ttl = get_settings().api_key_cache_ttl_s
    if ttl > 0:
        if len(_lookups) >= MAX_CACHED_KEYS:
            _lookups.clear()
        columns = {name: getattr(client, name) for name in ApiClient.__table__.c.keys()}  # noqa: SIM118
        _lookups[key_hash] = (time.monotonic() + ttl, columns | {"scopes": list(client.scopes)})
    return client
