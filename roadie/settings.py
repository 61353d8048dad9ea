"""One typed settings object, read from ``ROADIE_*`` environment variables.

Every setting is listed with its default in the README's configuration table.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Roadie's configuration; ``None`` URLs mean "start the embedded servers"."""

    model_config = SettingsConfigDict(env_prefix="ROADIE_", extra="ignore", populate_by_name=True)

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of PostgreSQL (postgresql+psycopg://...). Unset: embedded server.",
    )
    broker_url: str | None = Field(
        default=None, description="Celery broker URL (redis://... or amqp://...). Unset: embedded Redis."
    )
    home: Path = Field(default=Path(".roadie"), description="Where embedded servers, process logs and beat state live.")
    env: Literal["development", "test", "production"] = Field(
        default="development", description="Where this runs; `production` refuses every test-only switch."
    )
    fault_injection: bool = Field(
        default=False,
        description="Test-only: let `ROADIE_TEST_CRASH_POINT` kill a chain worker at a named point. "
        "Refused when `ROADIE_ENV=production`.",
    )
    api_host: str = Field(default="127.0.0.1", description="Address the intake API binds.")
    api_port: int = Field(default=8000, description="Port the intake API binds.")
    ipfs_api_addr: str = Field(
        default="/ip4/127.0.0.1/tcp/5001/http", description="Multiaddr of the IPFS node's RPC API (ipfs pool)."
    )
    solana_rpc_urls: Annotated[list[str], NoDecode] = Field(
        default=["http://127.0.0.1:8899"],
        min_length=1,
        validation_alias=AliasChoices("ROADIE_SOLANA_RPC_URLS", "ROADIE_SOLANA_RPC_URL"),
        description="Solana JSON-RPC URLs, comma-separated, tried in order of health (chain and indexer pools). "
        "`ROADIE_SOLANA_RPC_URL` (one URL) is read when this is unset.",
    )
    keypair_path: Path = Field(
        default=Path(".roadie/platform-keypair.json"),
        description="Solana CLI JSON keypair file of the platform; never logged.",
    )
    max_body_bytes: int = Field(default=1_048_576, description="Largest JSON request body the API accepts.")
    idempotency_ttl_hours: int = Field(default=24, ge=24, description="How long Idempotency-Keys are kept.")
    client_jobs_per_minute: int | None = Field(
        default=None,
        ge=0,
        description="Jobs each API client may have accepted per minute, unless its own quota says; unset: no limit.",
    )
    client_jobs_per_day: int | None = Field(
        default=None,
        ge=0,
        description="Jobs each API client may have accepted per day, unless its own quota says; unset: no limit.",
    )
    quota_redis_url: str | None = Field(
        default=None, description="Redis that counts quotas (redis://...). Unset: the broker, when it is Redis."
    )
    job_delay_horizon_days: int = Field(
        default=365, ge=1, le=3650, description="Furthest ahead a job's run_at or delay_s may put it."
    )
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
    db_connect_timeout_s: int = Field(
        default=5, ge=2, description="How long opening a database connection may take (libpq `connect_timeout`)."
    )
    db_keepalive_idle_s: int = Field(
        default=10,
        ge=1,
        description="A silent database connection is probed after this long, both ends; with the next two "
        "settings it bounds how long a cut-off peer goes unnoticed (also as `tcp_user_timeout`).",
    )
    db_keepalive_interval_s: int = Field(default=5, ge=1, description="Seconds between unanswered keepalive probes.")
    db_keepalive_count: int = Field(
        default=3, ge=1, description="Unanswered keepalive probes after which a database connection is dropped."
    )
    db_statement_timeout_api_s: float = Field(
        default=15.0, ge=0, description="Longest statement (and idle open transaction) of the API; 0: none."
    )
    db_statement_timeout_worker_s: float = Field(
        default=300.0, ge=0, description="Longest statement (and idle open transaction) of a worker; 0: none."
    )
    db_statement_timeout_relay_s: float = Field(
        default=30.0, ge=0, description="Longest statement (and idle open transaction) of the outbox relay; 0: none."
    )
    db_statement_timeout_beat_s: float = Field(
        default=60.0, ge=0, description="Longest statement (and idle open transaction) of beat; 0: none."
    )
    embedded_pg_port: int = Field(default=54329, description="Port of the embedded PostgreSQL.")
    embedded_redis_port: int = Field(default=56379, description="Port of the embedded Redis.")
    schedule_sweep_outbox: str = Field(default="every 15s", description="Beat: re-send lost jobs.")
    schedule_reap_lost_jobs: str = Field(default="every 10s", description="Beat: re-queue jobs of dead workers.")
    schedule_purge_idempotency_keys: str = Field(default="17 * * * *", description="Beat: drop expired keys.")
    schedule_release_held: str = Field(
        default="every 15s", description="Beat: release outbox rows held for a pause that was lifted."
    )
    schedule_purge_finished_jobs: str = Field(
        default="every 5m", description="Beat: delete finished jobs past ROADIE_JOB_RETENTION_DAYS."
    )
    job_retention_days: int = Field(
        default=30, ge=1, description="Finished jobs older than this are deleted (money and chain evidence never)."
    )
    schedule_sweep_scratch: str = Field(
        default="every 5m", description="Beat: remove scratch folders of media work whose worker died."
    )
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
    api_header_timeout_s: float = Field(
        default=10.0, gt=0, description="The API closes a connection whose request headers take longer than this."
    )
    api_body_timeout_s: float = Field(
        default=30.0, gt=0, description="The API closes a connection whose request body sends nothing for this long."
    )
    api_max_concurrency: int = Field(
        default=1000, ge=1, description="Connections and requests one API process serves at once; past it, 503."
    )
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
    max_upload_bytes: int = Field(
        default=524_288_000, gt=0, description="Largest audio file `POST /v1/tracks` accepts (413 above)."
    )
    max_cover_bytes: int = Field(default=10_485_760, gt=0, description="Largest cover image an upload may carry.")
    max_cover_pixels: int = Field(
        default=50_000_000,
        gt=0,
        description="Most pixels (width x height) a cover may declare; more is refused before decoding (a bomb).",
    )
    duplicate_audio_policy: Literal["allow", "hold", "reject"] = Field(
        default="hold",
        description="What follows when an upload's audio matches an existing track's fingerprint: `allow` "
        "publishes it (flagged), `hold` stops before pinning until an admin re-runs its ingest job, `reject` "
        "fails it with `duplicate_audio`.",
    )
    duplicate_audio_similarity: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Fingerprint similarity (0..1, 1 - twice the bit error rate once aligned) from which two "
        "recordings count as the same.",
    )
    max_duration_s: float = Field(default=1200.0, gt=0, description="Longest track accepted, in seconds.")
    preview_length_s: float = Field(default=30.0, gt=0, description="Length of the preview rendition, in seconds.")
    target_lufs: float = Field(
        default=-14.0, description="Integrated loudness players normalise to; the gain to reach it is stored."
    )
    true_peak_ceiling_dbtp: float = Field(
        default=-1.0, description="A positive normalisation gain never lifts the true peak above this."
    )
    analysis_window_s: float = Field(
        default=120.0, gt=0, description="Tempo and key are measured on this much audio from the middle of a track."
    )
    ffmpeg_path: str = Field(default="ffmpeg", description="The ffmpeg binary (a name on PATH or a path).")
    ffprobe_path: str = Field(default="ffprobe", description="The ffprobe binary (a name on PATH or a path).")

    # IPFS pool (issue 3)
    ipfs_timeout_s: float = Field(
        default=60.0, gt=0, description="Timeout of every call to the IPFS node's RPC API (connecting, each read)."
    )
    ipfs_call_attempts: int = Field(
        default=3,
        ge=1,
        description="Tries of one IPFS call on a connection error or timeout; then the job is retried later.",
    )
    nft_symbol: str = Field(
        default="ROADIE",
        min_length=1,
        max_length=10,
        description="Symbol of track NFTs, in their metadata JSON and on chain (≤ 10 chars).",
    )
    nft_external_url_base: str = Field(
        default="https://roadie.example/tracks",
        pattern=r"^https?://",
        description="A track's NFT metadata `external_url` is this base, a slash and the track id.",
    )

    # Chain pool and the local chain (issue 4)
    solana_commitment: Literal["processed", "confirmed", "finalized"] = Field(
        default="confirmed", description="Commitment the chain client reads at (sends are tracked to finalized)."
    )
    solana_rpc_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one Solana RPC request.")
    solana_rpc_attempts: int = Field(
        default=4,
        ge=1,
        description="Tries of one RPC request on transient errors (timeouts, 429, 5xx) before giving up.",
    )
    solana_rpc_backoff_s: float = Field(
        default=0.25, gt=0, description="First delay between RPC tries; doubles each try, with jitter."
    )
    solana_rpc_unhealthy_s: float = Field(
        default=30.0,
        gt=0,
        description="How long an RPC endpoint that timed out, refused the connection, answered 429, 5xx or "
        "garbage is passed over while another endpoint is healthy.",
    )
    chain_poll_interval_s: float = Field(
        default=0.5, gt=0, description="How often a chain job polls signature statuses while it waits."
    )
    chain_finality_timeout_s: float = Field(
        default=90.0,
        gt=0,
        description="How long a chain job waits for finalized before it is retried later (the journal resumes it).",
    )
    chain_compute_unit_margin: float = Field(
        default=1.2,
        ge=1.0,
        le=10.0,
        description="A transaction's SetComputeUnitLimit is its simulated unitsConsumed times this, rounded up.",
    )
    chain_priority_fee_percentile: int = Field(
        default=75,
        ge=0,
        le=100,
        description="SetComputeUnitPrice: this percentile of getRecentPrioritizationFees for the accounts it writes.",
    )
    chain_priority_fee_floor_micro_lamports: int = Field(
        default=1_000, ge=0, description="Lowest compute-unit price the platform pays (micro-lamports per unit)."
    )
    chain_priority_fee_ceiling_micro_lamports: int = Field(
        default=1_000_000,
        ge=0,
        description="Highest compute-unit price the platform pays (micro-lamports per unit); a higher estimate "
        "is clamped to it, and logged.",
    )
    reward_mint: str | None = Field(
        default=None,
        description="SPL mint of payouts (the treasury is the platform keypair's token account of it). "
        "Unset: the mint derived from the platform keypair, which `roadie localnet --provision` creates.",
    )
    reward_mint_decimals: int = Field(
        default=6, ge=0, le=18, description="Decimals of the reward mint (transfer_checked refuses a mismatch)."
    )
    staking_vault_wallet: str | None = Field(
        default=None,
        description="Owner of the staking vault: a `roadie:stake` transfer_checked into its token account of the "
        "reward mint opens a staking position. Unset: a wallet derived from the platform keypair.",
    )
    escrow_wallet: str | None = Field(
        default=None,
        description="The marketplace escrow: an NFT it hands over in a transaction that pays the seller is a sale. "
        "Unset: a wallet derived from the platform keypair.",
    )
    localnet_slot_ms: int = Field(
        default=400, ge=0, description="`roadie localnet`: a block every this many ms (0: only on request)."
    )
    localnet_finality_lag: int = Field(
        default=2, ge=0, description="`roadie localnet`: blocks between confirmed and finalized."
    )

    # Indexer pool (issue 4)
    indexer_watch_addresses: list[str] = Field(
        default=[],
        description="Addresses the indexer reads besides the platform keypair (mint authority and treasury "
        "owner): the collection mint, programs. A JSON list of base58 addresses.",
    )
    indexer_watch_nft_mints: bool = Field(
        default=True, description="Also read each of our NFT mints, to see NFTs change hands between wallets."
    )
    indexer_page_size: int = Field(
        default=1000, ge=1, le=1000, description="Signatures per getSignaturesForAddress page (the RPC's limit: 1000)."
    )
    indexer_batch_size: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Transactions written per database transaction with the cursor; slots per backfill step.",
    )
    indexer_fetch_concurrency: int = Field(
        default=8, ge=1, le=64, description="getTransaction/getBlock requests the indexer keeps in flight."
    )
    indexer_finality_check_limit: int = Field(
        default=1000, ge=1, description="Unfinalized rows re-checked with getSignatureStatuses per tick (oldest first)."
    )
    schedule_indexer_tick: str = Field(
        default="every 2s", description="Beat: the indexer reads new transactions and re-checks the unfinalized tail."
    )

    @model_validator(mode="after")
    def _no_fault_injection_in_production(self) -> Settings:
        if self.fault_injection and self.env == "production":
            raise ValueError("ROADIE_FAULT_INJECTION cannot be on when ROADIE_ENV=production")
        return self

    @model_validator(mode="after")
    def _priority_fee_floor_under_ceiling(self) -> Settings:
        if self.chain_priority_fee_floor_micro_lamports > self.chain_priority_fee_ceiling_micro_lamports:
            raise ValueError(
                "ROADIE_CHAIN_PRIORITY_FEE_FLOOR_MICRO_LAMPORTS is above "
                "ROADIE_CHAIN_PRIORITY_FEE_CEILING_MICRO_LAMPORTS"
            )
        return self

    @field_validator("solana_rpc_urls", mode="before")
    @classmethod
    def _comma_separated(cls, urls: object) -> object:
        return [url.strip() for url in urls.split(",") if url.strip()] if isinstance(urls, str) else urls

    @field_validator("solana_rpc_urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for number, url in enumerate(urls, 1):  # by position: a provider URL carries its API key
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"RPC URL {number} is not an http:// or https:// URL")
        return urls

    @property
    def solana_rpc_url(self) -> str:
        """The first RPC endpoint: the local chain serves it, and tools that talk to one endpoint use it."""
        return self.solana_rpc_urls[0]

    @field_validator("indexer_watch_addresses", "staking_vault_wallet", "escrow_wallet")
    @classmethod
    def _base58_addresses(cls, value: list[str] | str | None) -> list[str] | str | None:
        from solders.pubkey import Pubkey

        for address in [value] if isinstance(value, str) else value or []:
            try:
                Pubkey.from_string(address)
            except ValueError:
                raise ValueError(f"{address!r} is not a base58 Solana address") from None
        return value

    # Ledger pool: rewards, staking, royalties (issue 5)
    ledger_min_listen_ms: int = Field(
        default=30_000, ge=1, description="A play counts from this many ms listened, or from half of a shorter track."
    )
    ledger_daily_plays_per_listener: int = Field(
        default=200, ge=1, description="Plays a day (UTC) for which one listener is rewarded."
    )
    ledger_daily_plays_per_track: int = Field(
        default=20, ge=1, description="Plays a day (UTC) of one track for which one listener is rewarded."
    )
    ledger_listener_rate: int = Field(
        default=1_000_000, ge=0, description="Base units a listener earns per counted play, before pro-rata scaling."
    )
    ledger_artist_rate: int = Field(
        default=500_000, ge=0, description="Base units a track's artist earns per counted play, before scaling."
    )
    ledger_reward_budget: int = Field(
        default=1_000_000_000_000, ge=0, description="Base units the treasury gives per rewards period at most."
    )
    ledger_reward_user_cap: int = Field(
        default=50_000_000_000, ge=1, description="Base units one user can earn per rewards period at most."
    )
    ledger_reward_period_s: int = Field(default=3600, ge=60, le=86_400, description="Length of a rewards period.")
    ledger_royalty_period_s: int = Field(default=86_400, ge=60, le=86_400, description="Length of a royalty period.")
    ledger_staking_period_s: int = Field(default=86_400, ge=60, le=86_400, description="Length of a staking period.")
    ledger_play_max_age_s: int = Field(
        default=7 * 86_400, ge=60, description="Plays that started longer ago than this are refused."
    )
    ledger_play_max_skew_s: int = Field(
        default=300, ge=0, description="Plays may start at most this far in the future (client clock skew)."
    )
    ledger_play_overrun_ms: int = Field(
        default=10_000, ge=0, description="A play may report at most this much more than the track's duration."
    )
    ledger_staking_max_rate_bps: int = Field(
        default=5_000, ge=1, le=100_000, description="Highest staking rate in basis points a position may have."
    )
    ledger_early_unstake_penalty_bps: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="Share of the principal an unstake inside the lock returns to the treasury.",
    )
    ledger_min_payout: int = Field(
        default=1_000_000, ge=1, description="Smaller balances are not paid out but carried to a later period."
    )
    ledger_settle_grace_s: int = Field(
        default=600,
        ge=0,
        description="A payout still unsettled this long after its transfer was finalized fails the ledger check.",
    )
    ledger_max_catchup_periods: int = Field(
        default=1000, ge=1, description="Periods one catch-up job runs at most; the next beat continues."
    )
    schedule_ledger_rewards: str = Field(default="1 * * * *", description="Beat: accrue and pay listening rewards.")
    schedule_ledger_royalties: str = Field(default="5 0 * * *", description="Beat: distribute and pay royalties.")
    schedule_ledger_staking: str = Field(default="0 0 * * *", description="Beat: pay staking interest.")
    schedule_ledger_payout_status: str = Field(
        default="every 30s", description="Beat: payouts follow their chain batch's status."
    )
    schedule_ledger_check: str = Field(default="30 0 * * *", description="Beat: the ledger's invariant check.")

    # Webhooks and batches (issue 14)
    webhook_secret_keys: SecretStr | None = Field(
        default=None,
        description="Fernet keys (comma-separated, newest first) that encrypt endpoint signing secrets at rest. "
        "Unset: a key kept in `ROADIE_HOME/webhook-secret.key`, made on first use; required in production.",
    )
    webhook_allowed_hosts: list[str] = Field(
        default=[],
        description="Hosts a webhook URL may name over plain http, and whose private or loopback addresses "
        'deliveries may reach (a JSON list, e.g. ["127.0.0.1"]); every other URL must be https to a public address.',
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, le=60, description="A delivery's whole POST, connect to last byte read, at most this long."
    )
    webhook_retry_schedule_s: list[float] = Field(
        default=[5, 60, 300, 1800, 7200, 18_000, 36_000],
        min_length=1,
        max_length=50,
        description="Delays before each retry of a failed delivery (±20 % jitter); after the last, it fails.",
    )
    webhook_disable_after_s: float = Field(
        default=3 * 86_400,
        gt=0,
        description="An endpoint whose deliveries have all failed for this long is disabled, with the reason.",
    )
    webhook_secret_rotation_overlap_s: float = Field(
        default=86_400, ge=0, description="After a secret rotation, the old secret signs beside the new for this long."
    )
    batch_max_jobs: int = Field(default=1000, ge=1, le=1000, description="Most jobs one `POST /v1/batches` creates.")

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
