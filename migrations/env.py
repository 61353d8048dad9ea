"""Alembic environment: online migrations only, under an advisory lock, with short lock timeouts."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from models import Base
from roadie.settings import get_settings

MIGRATION_LOCK = 0x726F61646965  # "roadie": two deploys never migrate at once


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url") or get_settings().sqlalchemy_url
    engine = create_engine(url)
    with engine.connect() as connection:
        connection.execute(text("SET statement_timeout = '60s'"))
        connection.execute(text("SET lock_timeout = '4s'"))
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                compare_type=True,
                compare_server_default=True,
                transaction_per_migration=True,
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
            connection.commit()
    engine.dispose()


run_migrations_online()
