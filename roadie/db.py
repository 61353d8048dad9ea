"""Database engines and the one-transaction-per-unit-of-work helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import lru_cache

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from roadie.settings import get_settings


@lru_cache(maxsize=1)
def sync_engine() -> Engine:
    """The process's engine for workers, beat, the relay and the CLI."""
    return create_engine(get_settings().sqlalchemy_url, pool_pre_ping=True, pool_size=5, max_overflow=10)


@lru_cache(maxsize=1)
def async_engine() -> AsyncEngine:
    """The API's engine; one per process, created lazily inside the running loop."""
    return create_async_engine(get_settings().sqlalchemy_url, pool_pre_ping=True, pool_size=20, max_overflow=20)


def dispose_engines() -> None:
    """Forget pooled connections, e.g. in a freshly forked worker child."""
    if sync_engine.cache_info().currsize:
        sync_engine().dispose(close=False)
    sync_engine.cache_clear()
    async_engine.cache_clear()


@contextmanager
def transaction() -> Iterator[Session]:
    """One database transaction: committed when the block returns, rolled back when it raises."""
    with sessionmaker(sync_engine(), expire_on_commit=False).begin() as session:
        yield session


@contextmanager
def autocommit() -> Iterator[Connection]:
    """A connection whose every statement commits on its own: one round trip for a one-statement step."""
    with sync_engine().connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")


@asynccontextmanager
async def async_transaction() -> AsyncIterator[AsyncSession]:
    """The async twin of :func:`transaction`, for the API."""
    async with async_sessionmaker(async_engine(), expire_on_commit=False).begin() as session:
        yield session
