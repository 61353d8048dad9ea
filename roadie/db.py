"""Database engines and the one-transaction-per-unit-of-work helpers."""

from __future__ import annotations

import enum
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import lru_cache
from typing import Any, Literal

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from roadie.settings import get_settings

#: A pooled connection back in the pool for less than this is handed out without a ping.
PING_IF_IDLE_S = 1.0

#: Which process this is. The four long-running kinds each have a statement timeout of their own;
#: ``cli`` (commands, migrations, scripts) has none, but the same connect timeout and keepalives.
Role = Literal["api", "worker", "relay", "beat", "cli"]
_role: Role = "cli"


def use_role(role: Role) -> None:
    """Called at a process's start: its connections from now on carry the role's timeouts and name."""
    global _role  # noqa: PLW0603 - one role per process
    if role != _role:
        _role = role
        dispose_engines()


def connect_args() -> dict[str, Any]:
    """libpq parameters of every connection of this process's role.

    A cut-off or frozen peer is noticed within ``idle + interval x count`` seconds on both ends:
    client keepalives and ``tcp_user_timeout`` end a statement stuck in TCP retransmission, and the
    server's own keepalives and connection checks end a session whose client is gone, with its locks,
    so a successor is not kept waiting. The statement timeout bounds a statement (and an idle open
    transaction), so nothing a worker started lands long after the worker stopped waiting for it.
    """
    settings = get_settings()
    idle, interval, count = settings.db_keepalive_idle_s, settings.db_keepalive_interval_s, settings.db_keepalive_count
    user_timeout_ms = (idle + interval * count) * 1000
    statement_timeout_ms = round(getattr(settings, f"db_statement_timeout_{_role}_s", 0.0) * 1000)
    server = {
        "statement_timeout": statement_timeout_ms,
        "idle_in_transaction_session_timeout": statement_timeout_ms,
        "tcp_keepalives_idle": idle,
        "tcp_keepalives_interval": interval,
        "tcp_keepalives_count": count,
        "tcp_user_timeout": user_timeout_ms,
        "client_connection_check_interval": interval * 1000,
    }
    return {
        "connect_timeout": settings.db_connect_timeout_s,
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": count,
        "tcp_user_timeout": user_timeout_ms,
        "application_name": f"roadie-{_role}",
        "options": " ".join(f"-c {name}={value}" for name, value in server.items()),
    }


def _ping_when_idle(engine: Engine) -> Engine:
    """Like ``pool_pre_ping``, but only for connections idle past PING_IF_IDLE_S.

    A worker or the API's group commit checks out a connection per step, back to back; a ping
    each time doubled their round trips. A connection that was fine a moment ago is used as it
    is; one that sat idle (a database restart, a dropped socket) is tested and replaced first.
    """

    @event.listens_for(engine, "checkin")
    def _idle_from_now(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) <= PING_IF_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError from exc  # the pool replaces the connection and tries again

    return engine


@lru_cache(maxsize=1)
def sync_engine() -> Engine:
    """The process's engine for workers, beat, the relay and the CLI."""
    engine = create_engine(
        get_settings().sqlalchemy_url, pool_size=5, max_overflow=10, connect_args=connect_args(), hide_parameters=True
    )
    return _ping_when_idle(engine)  # hide_parameters: error texts reach logs and tracebacks, parameters stay out


@lru_cache(maxsize=1)
def autocommit_engine() -> Engine:
    """Connections that stay in autocommit mode, for steps that are one statement each.

    Kept apart from :func:`sync_engine`, whose connections run transactions, so that no checkout
    switches a connection's isolation level there and back.
    """
    engine = create_engine(
        get_settings().sqlalchemy_url,
        isolation_level="AUTOCOMMIT",
        connect_args=connect_args(),
        hide_parameters=True,
        pool_size=2,
        max_overflow=5,
        pool_reset_on_return=None,  # no transaction to roll back: a ROLLBACK per checkin would be a wasted call
    )
    return _ping_when_idle(engine)


@lru_cache(maxsize=1)
def async_engine() -> AsyncEngine:
    """The API's engine; one per process, created lazily inside the running loop."""
    engine = create_async_engine(
        get_settings().sqlalchemy_url, pool_size=20, max_overflow=20, connect_args=connect_args(), hide_parameters=True
    )
    _ping_when_idle(engine.sync_engine)
    return engine


def dispose_engines() -> None:
    """Forget pooled connections, e.g. in a freshly forked worker child."""
    for engine in (sync_engine, autocommit_engine):
        if engine.cache_info().currsize:
            engine().dispose(close=False)
        engine.cache_clear()
    async_engine.cache_clear()


@contextmanager
def transaction() -> Iterator[Session]:
    """One database transaction: committed when the block returns, rolled back when it raises."""
    with sessionmaker(sync_engine(), expire_on_commit=False).begin() as session:
        yield session


@contextmanager
def autocommit() -> Iterator[Connection]:
    """A connection whose every statement commits on its own: one round trip for a one-statement step."""
    with autocommit_engine().connect() as connection:
        yield connection


class PreparedStatement:
    """A Core statement compiled once and run by psycopg itself as a server-side prepared statement,
    committed on its own.

    For the worker's two steps per job (claim, record the success), the API's group commit and the
    relay, SQLAlchemy's per-execution work (cache lookup, parameter and result processing) cost more CPU
    than Postgres spent running them.
    Parameters go to psycopg as they are: pass JSON values wrapped in ``psycopg.types.json.Jsonb``.
    """

    def __init__(self, statement: Any) -> None:
        compiled = statement.compile(dialect=autocommit_engine().dialect)
        self.sql = str(compiled)
        # The statement's own literal values (enum members as their database values); callers fill in the rest.
        values = compiled.params
        self.constants = {
            name: value.value if isinstance(value := values[name], enum.Enum) else value
            for bind, name in compiled.bind_names.items()
            if not bind.required
        }

    def fetchone(self, **parameters: Any) -> tuple[Any, ...] | None:
        """Run the statement with ``parameters``; its first row, if any."""
        connection = autocommit_engine().raw_connection()
        try:
            driver: psycopg.Connection[tuple[Any, ...]] = connection.driver_connection  # type: ignore[assignment]
            return driver.execute(self.sql, {**self.constants, **parameters}, prepare=True).fetchone()
        except psycopg.OperationalError:
            connection.invalidate()  # a broken connection does not go back to the pool
            raise
        finally:
            connection.close()

    def fetchall_on(self, connection: Connection, **parameters: Any) -> list[tuple[Any, ...]]:
        """Run the statement on ``connection``, in its transaction; all its rows."""
        driver: psycopg.Connection[tuple[Any, ...]] = connection.connection.driver_connection  # type: ignore[assignment]
        try:
            return driver.execute(self.sql, {**self.constants, **parameters}, prepare=True).fetchall()
        except psycopg.OperationalError:
            connection.invalidate()  # a broken connection does not go back to the pool
            raise

    async def fetchall_on_async(self, connection: AsyncConnection, **parameters: Any) -> list[tuple[Any, ...]]:
        """Run the statement on ``connection`` (in its transaction, if it has one begun); all its rows."""
        raw = await connection.get_raw_connection()
        driver: psycopg.AsyncConnection[tuple[Any, ...]] = raw.driver_connection  # type: ignore[assignment]
        try:
            cursor = await driver.execute(self.sql, {**self.constants, **parameters}, prepare=True)
            return await cursor.fetchall()
        except psycopg.OperationalError:
            await connection.invalidate()  # a broken connection does not go back to the pool
            raise


@asynccontextmanager
async def async_transaction() -> AsyncIterator[AsyncSession]:
    """The async twin of :func:`transaction`, for the API."""
    async with async_sessionmaker(async_engine(), expire_on_commit=False).begin() as session:
        yield session


def advisory_lock_key(*parts: object) -> int:
    """The bigint of a Postgres advisory lock named by ``parts`` (joined with ``:``), stable across processes."""
    name = ":".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
