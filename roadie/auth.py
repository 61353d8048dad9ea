"""API keys: random, shown once, stored only as SHA-256 hashes, each with scopes."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.platform import SCOPES, ApiClient

KEY_PREFIX = "rk_live_"


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def validate_scopes(scopes: Iterable[str]) -> list[str]:
    chosen = sorted(set(scopes))
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown or not chosen:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(unknown) or 'none'}")
    return chosen


async def create_client(session: AsyncSession, name: str, scopes: Iterable[str]) -> tuple[ApiClient, str]:
    """Create a client and return it with its key, which is never stored or shown again."""
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    client = ApiClient(
        name=name, key_prefix=raw_key[: len(KEY_PREFIX) + 4], key_hash=hash_key(raw_key), scopes=validate_scopes(scopes)
    )
    session.add(client)
    await session.flush()
    return client, raw_key


async def authenticate(session: AsyncSession, raw_key: str) -> ApiClient | None:
    """The live client owning this key, or None."""
    client = await session.scalar(select(ApiClient).where(ApiClient.key_hash == hash_key(raw_key)))
    if client is None or client.revoked_at is not None:
        return None
    return client
