"""One typed settings object, read from ``ROADIE_*`` environment variables.

Every setting is listed with its default in the README's configuration table.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Roadie's configuration; ``None`` URLs mean "start the embedded servers"."""

    model_config = SettingsConfigDict(env_prefix="ROADIE_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of PostgreSQL (postgresql+psycopg://...). Unset: embedded server.",
    )
    broker_url: str | None = Field(
        default=None, description="Celery broker URL (redis://... or amqp://...). Unset: embedded Redis."
    )
    home: Path = Field(default=Path(".roadie"), description="Where embedded servers, process logs and beat state live.")
    api_host: str = Field(default="127.0.0.1", description="Address the intake API binds.")
    api_port: int = Field(default=8000, description="Port the intake API binds.")
    ipfs_api_addr: str = Field(
        default="/ip4/127.0.0.1/tcp/5001/http", description="Multiaddr of the IPFS node's RPC API (ipfs pool)."
    )
    solana_rpc_url: str = Field(
        default="http://127.0.0.1:8899", description="Solana JSON-RPC URL (chain and indexer pools)."
    )
    keypair_path: Path = Field(
        default=Path(".roadie/platform-keypair.json"),
        description="Solana CLI JSON keypair file of the platform; never logged.",
    )
    max_body_bytes: int = Field(default=1_048_576, description="Largest JSON request body the API accepts.")
    idempotency_ttl_hours: int = Field(default=24, ge=24, description="How long Idempotency-Keys are kept.")
    heartbeat_interval_s: float = Field(default=5.0, gt=0, description="How often a running job beats.")
    heartbeat_timeout_s: float = Field(
        default=30.0, gt=0, description="A running job whose beat is older than this is reaped."
    )
    max_deliveries: int = Field(default=5, ge=1, description="Deliveries of one job after which a lost job is failed.")
    republish_after_s: float = Field(
        default=60.0, gt=0, description="A queued job not started this long after publishing is re-sent."
    )
    relay_poll_interval_s: float = Field(default=0.5, gt=0, description="Outbox relay's fallback poll.")
    retry_backoff_base_s: float = Field(default=1.0, gt=0, description="First retry delay.")
    retry_backoff_max_s: float = Field(default=600.0, gt=0, description="Largest retry delay.")
    embedded_pg_port: int = Field(default=54329, description="Port of the embedded PostgreSQL.")
    embedded_redis_port: int = Field(default=56379, description="Port of the embedded Redis.")
    schedule_sweep_outbox: str = Field(default="every 15s", description="Beat: re-send lost jobs.")
    schedule_reap_lost_jobs: str = Field(default="every 10s", description="Beat: re-queue jobs of dead workers.")
    schedule_purge_idempotency_keys: str = Field(default="17 * * * *", description="Beat: drop expired keys.")
    flower_address: str = Field(default="127.0.0.1", description="Address `roadie flower` binds.")
    flower_port: int = Field(default=5555, ge=1, le=65535, description="Port `roadie flower` binds.")
    flower_basic_auth: SecretStr | None = Field(
        default=None,
        description="Flower's basic auth, `user:password[,user2:password2]`; never logged. "
        "Flower refuses to start without this or OAuth.",
    )
    flower_auth: str | None = Field(
        default=None,
        description="Flower OAuth (`--auth`): `.*@example.com` or `a@example.com|b@example.com`, matched whole.",
    )
    flower_auth_provider: str | None = Field(
        default=None,
        description="Flower OAuth login handler (`--auth_provider`), e.g. `flower.views.auth.GithubLoginHandler`.",
    )
    flower_oauth2_key: str | None = Field(default=None, description="Flower OAuth client id (`--oauth2_key`).")
    flower_oauth2_secret: SecretStr | None = Field(
        default=None, description="Flower OAuth client secret (`--oauth2_secret`); never logged."
    )
    flower_oauth2_redirect_uri: str | None = Field(
        default=None,
        description="Flower OAuth callback (`--oauth2_redirect_uri`), e.g. `https://flower.example.com/login`.",
    )
    log_level: str = Field(default="INFO", description="Level of the JSON log lines every process writes to stderr.")
    worker_metrics_port: int = Field(
        default=9808, ge=0, le=65535, description="Port a worker serves Prometheus metrics on; 0: off."
    )
    worker_metrics_host: str = Field(default="127.0.0.1", description="Address a worker's metrics port binds.")
    admin_session_secret: SecretStr | None = Field(
        default=None,
        description="Signs the admin console's session cookies. Unset: a random one per API process start.",
    )

    # Intake performance (issue 2, item 10)
    api_key_cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        description="How long an API process reuses a key lookup. A revoked key creates no job at once, "
        "but may still read for this long; 0: look the key up on every request.",
    )

    # Media pool and uploads (issue 3)
    blob_dir: Path = Field(
        default=Path(".roadie/blobs"),
        description="Blob store: where uploads and renditions are kept before and after pinning.",
    )

    # IPFS pool (issue 3)

    # Chain pool and the local chain (issue 4)

    # Indexer pool (issue 4)

    # Ledger pool: rewards, staking, royalties (issue 5)

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url is None

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL in force: the configured one or the embedded server's."""
        if self.database_url is not None:
            return self.database_url
        return f"postgresql+psycopg://roadie@127.0.0.1:{self.embedded_pg_port}/roadie"

    @property
    def celery_broker_url(self) -> str:
        """The broker URL in force: the configured one or the embedded Redis."""
        if self.broker_url is not None:
            return self.broker_url
        return f"redis://127.0.0.1:{self.embedded_redis_port}/0"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings are read once per process; tests clear the cache to change them."""
    return Settings()
