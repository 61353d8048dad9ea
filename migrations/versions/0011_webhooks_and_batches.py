"""Webhooks and job batches: endpoints, events written by triggers with their facts, deliveries, attempts

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 20:00:00.000000

The events are inserted by triggers in the transaction that records the fact (a client's job
finishing, a track settling, an NFT finalized, a payout settled, a batch's last job), only when
some enabled endpoint (or the job's callback_url) wants them; a NOTIFY on the outbox channel
wakes the relay, which fans them out into deliveries.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ('jobs:write', 'jobs:read', 'jobs:rehearse', 'tracks:write', 'plays:write', 'sales:write', 'ledger:read', 'admin')
AFTER = (
    'jobs:write', 'jobs:read', 'jobs:rehearse', 'tracks:write', 'plays:write', 'sales:write', 'ledger:read',
    'webhooks:write', 'webhooks:read', 'admin',
)  # fmt: skip
EVENT_TYPES = (
    'job.succeeded', 'job.failed', 'job.cancelled', 'track.ready', 'track.failed', 'nft.minted',
    'payout.finalized', 'payout.failed', 'batch.completed',
)  # fmt: skip


def _listed(values: Sequence[str]) -> str:
    return ', '.join(f"'{value}'" for value in values)


def _replace_scopes_check(scopes: Sequence[str]) -> None:
    op.drop_constraint(op.f('ck_api_clients_known_scopes'), 'api_clients', type_='check')
    op.create_check_constraint(
        op.f('ck_api_clients_known_scopes'), 'api_clients', f"scopes <@ ARRAY[{_listed(scopes)}]::varchar[]"
    )


FUNCTIONS_UP = """
-- The one definition of who hears an event: the enabled endpoints of the fact's client that
-- subscribe to its type; for the platform's own facts (no client: payouts), the endpoints of
-- clients that may read the ledger. The triggers ask whether anyone listens; the relay's fan-out
-- asks whom.
CREATE FUNCTION roadie_webhook_listeners(event_type varchar, owner uuid)
RETURNS TABLE (endpoint_id uuid, url text) LANGUAGE sql STABLE AS $$
    SELECT e.id, e.url
    FROM webhook_endpoints e JOIN api_clients c ON c.id = e.client_id
    WHERE e.enabled AND c.revoked_at IS NULL AND event_type = ANY (e.events)
      AND (e.client_id = owner OR (owner IS NULL AND c.scopes && ARRAY['ledger:read', 'admin']::varchar[]))
$$;

-- An event, in the caller's transaction, when an endpoint or a callback_url wants it.
CREATE FUNCTION roadie_emit_event(event_type varchar, owner uuid, callback text, body jsonb, request varchar)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF callback IS NULL AND NOT EXISTS (SELECT 1 FROM roadie_webhook_listeners(event_type, owner)) THEN
        RETURN;
    END IF;
    INSERT INTO webhook_events (type, client_id, callback_url, data, request_id)
        VALUES (event_type, owner, callback, body, request);
    PERFORM pg_notify('roadie_outbox', '');
END $$;

-- A job of a batch counts towards it from its insert on; the batch's row lock orders the jobs
-- joining it (a track upload naming the batch) and finishing in it.
CREATE FUNCTION roadie_batch_joined() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE batches SET total_jobs = total_jobs + 1 WHERE id = NEW.batch_id;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_batch_joined AFTER INSERT ON jobs FOR EACH ROW
    WHEN (NEW.batch_id IS NOT NULL) EXECUTE FUNCTION roadie_batch_joined();

-- A job entering or leaving a final status: its batch's counts (a re-run takes its old outcome
-- back), the batch's one batch.completed when its last job ends (the batch row's lock makes the
-- last of two jobs ending at once see the other's count), and the job's own event when a client
-- asked for it (not the pipeline's child jobs, not the deliveries themselves).
CREATE FUNCTION roadie_job_settled() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    batch batches%ROWTYPE;
BEGIN
    IF NEW.batch_id IS NOT NULL THEN
        UPDATE batches SET
            succeeded = succeeded + (NEW.status = 'succeeded')::int - (OLD.status = 'succeeded')::int,
            failed = failed + (NEW.status = 'failed')::int - (OLD.status = 'failed')::int,
            cancelled = cancelled + (NEW.status = 'cancelled')::int - (OLD.status = 'cancelled')::int
        WHERE id = NEW.batch_id
        RETURNING * INTO batch;
        IF batch.completed_at IS NULL AND batch.total_jobs = batch.expected_jobs
           AND batch.succeeded + batch.failed + batch.cancelled = batch.total_jobs THEN
            UPDATE batches SET completed_at = now() WHERE id = batch.id;
            PERFORM roadie_emit_event(
                'batch.completed', batch.client_id, batch.callback_url,
                jsonb_build_object('batch', jsonb_build_object(
                    'id', batch.id, 'total', batch.total_jobs, 'succeeded', batch.succeeded,
                    'failed', batch.failed, 'cancelled', batch.cancelled, 'created_at', batch.created_at,
                    'completed_at', now())),
                batch.request_id);
        END IF;
    END IF;
    IF NEW.status IN ('succeeded', 'failed', 'cancelled') AND NEW.client_id IS NOT NULL
       AND NEW.parent_id IS NULL AND NEW.queue <> 'webhooks' THEN
        PERFORM roadie_emit_event(
            'job.' || NEW.status, NEW.client_id, NEW.callback_url,
            jsonb_build_object('job', jsonb_build_object(
                'id', NEW.id, 'type', NEW.type, 'status', NEW.status, 'attempts', NEW.attempts,
                'result', NEW.result, 'error', CASE WHEN NEW.error_code IS NULL THEN NULL
                    ELSE jsonb_build_object('code', NEW.error_code, 'message', NEW.error_message) END,
                'batch_id', NEW.batch_id, 'created_at', NEW.created_at, 'finished_at', NEW.finished_at)),
            NEW.request_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_settled AFTER UPDATE OF status ON jobs FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND (NEW.status IN ('succeeded', 'failed', 'cancelled') OR OLD.status IN ('succeeded', 'failed', 'cancelled')))
    EXECUTE FUNCTION roadie_job_settled();

-- A track ready or failed: told to the client whose upload made it.
CREATE FUNCTION roadie_track_settled() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    upload jobs%ROWTYPE;
BEGIN
    SELECT * INTO upload FROM jobs WHERE id = NEW.job_id;
    IF upload.client_id IS NOT NULL THEN
        PERFORM roadie_emit_event(
            'track.' || NEW.status, upload.client_id, upload.callback_url,
            jsonb_build_object('track', jsonb_build_object(
                'id', NEW.id, 'title', NEW.title, 'status', NEW.status, 'artist_id', NEW.artist_id,
                'duration_ms', NEW.duration_ms, 'job_id', NEW.job_id)),
            upload.request_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER tracks_settled AFTER UPDATE OF status ON tracks FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status IN ('ready', 'failed'))
    EXECUTE FUNCTION roadie_track_settled();

-- An NFT finalized on chain: told to the client whose upload made its track.
CREATE FUNCTION roadie_nft_minted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    upload jobs%ROWTYPE;
BEGIN
    SELECT j.* INTO upload FROM tracks t JOIN jobs j ON j.id = t.job_id WHERE t.id = NEW.track_id;
    IF upload.client_id IS NOT NULL THEN
        PERFORM roadie_emit_event(
            'nft.minted', upload.client_id, upload.callback_url,
            jsonb_build_object('nft', jsonb_build_object(
                'id', NEW.id, 'track_id', NEW.track_id, 'mint_address', NEW.mint_address,
                'signature', NEW.signature, 'slot', NEW.slot, 'owner_wallet', NEW.owner_wallet,
                'metadata_uri', NEW.metadata_uri)),
            upload.request_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER nfts_minted AFTER UPDATE OF status ON nfts FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status = 'finalized')
    EXECUTE FUNCTION roadie_nft_minted();

-- A payout settled or failed: the platform's own fact (amounts as strings of base units).
CREATE FUNCTION roadie_payout_settled() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM roadie_emit_event(
        'payout.' || NEW.status, NULL, NULL,
        jsonb_build_object('payout', jsonb_build_object(
            'id', NEW.id, 'kind', NEW.kind, 'account_id', NEW.account_id, 'amount', NEW.amount::text,
            'wallet', NEW.wallet, 'period_start', NEW.period_start, 'batch_id', NEW.batch_id,
            'status', NEW.status)),
        NULL);
    RETURN NULL;
END $$;
CREATE TRIGGER payouts_settled AFTER UPDATE OF status ON payouts FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status IN ('finalized', 'failed'))
    EXECUTE FUNCTION roadie_payout_settled();
"""

FUNCTIONS_DOWN = """
DROP TRIGGER payouts_settled ON payouts; DROP FUNCTION roadie_payout_settled();
DROP TRIGGER nfts_minted ON nfts; DROP FUNCTION roadie_nft_minted();
DROP TRIGGER tracks_settled ON tracks; DROP FUNCTION roadie_track_settled();
DROP TRIGGER jobs_settled ON jobs; DROP FUNCTION roadie_job_settled();
DROP TRIGGER jobs_batch_joined ON jobs; DROP FUNCTION roadie_batch_joined();
DROP FUNCTION roadie_emit_event(varchar, uuid, text, jsonb, varchar);
DROP FUNCTION roadie_webhook_listeners(varchar, uuid);
"""


def upgrade() -> None:
    _replace_scopes_check(AFTER)
    op.create_table('batches',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('client_id', sa.UUID(), nullable=False),
    sa.Column('expected_jobs', sa.Integer(), nullable=False),
    sa.Column('total_jobs', sa.Integer(), server_default='0', nullable=False),
    sa.Column('succeeded', sa.Integer(), server_default='0', nullable=False),
    sa.Column('failed', sa.Integer(), server_default='0', nullable=False),
    sa.Column('cancelled', sa.Integer(), server_default='0', nullable=False),
    sa.Column('callback_url', sa.Text(), nullable=True),
    sa.Column('request_id', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('expected_jobs BETWEEN 1 AND 1000', name=op.f('ck_batches_expected_jobs_in_range')),
    sa.CheckConstraint('total_jobs <= expected_jobs', name=op.f('ck_batches_not_over_full')),
    sa.CheckConstraint(
        'succeeded + failed + cancelled <= total_jobs AND least(succeeded, failed, cancelled) >= 0',
        name=op.f('ck_batches_counts_in_range'),
    ),
    sa.ForeignKeyConstraint(['client_id'], ['api_clients.id'], name=op.f('fk_batches_client_id_api_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batches'))
    )
    op.create_index(op.f('ix_batches_client_id'), 'batches', ['client_id'], unique=False)
    op.create_table('webhook_endpoints',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('client_id', sa.UUID(), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('events', postgresql.ARRAY(sa.String(length=32)), nullable=False),
    sa.Column('description', sa.String(length=500), nullable=True),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('disabled_reason', sa.Text(), nullable=True),
    sa.Column('secret', sa.LargeBinary(), nullable=False, comment='The signing secret, Fernet-encrypted.'),
    sa.Column('previous_secret', sa.LargeBinary(), nullable=True),
    sa.Column('previous_secret_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failing_since', sa.DateTime(timezone=True), nullable=True, comment='First failed attempt since the last delivered one; the endpoint is disabled after a run of failures.'),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint(f'cardinality(events) > 0 AND events <@ ARRAY[{_listed(EVENT_TYPES)}]::varchar[]', name=op.f('ck_webhook_endpoints_known_events')),
    sa.CheckConstraint('enabled OR disabled_reason IS NOT NULL', name=op.f('ck_webhook_endpoints_disabled_has_reason')),
    sa.CheckConstraint('(previous_secret IS NULL) = (previous_secret_expires_at IS NULL)', name=op.f('ck_webhook_endpoints_previous_secret_expires')),
    sa.ForeignKeyConstraint(['client_id'], ['api_clients.id'], name=op.f('fk_webhook_endpoints_client_id_api_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_endpoints'))
    )
    op.create_index('ix_webhook_endpoints_client_id_created_at', 'webhook_endpoints', ['client_id', 'created_at'], unique=False)
    op.create_table('webhook_events',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('client_id', sa.UUID(), nullable=True, comment="Whose fact it is; null: the platform's own."),
    sa.Column('callback_url', sa.Text(), nullable=True, comment="A job's own callback_url, besides endpoints."),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True, comment='When its deliveries were made.'),
    sa.CheckConstraint(f'type IN ({_listed(EVENT_TYPES)})', name=op.f('ck_webhook_events_known_type')),
    sa.ForeignKeyConstraint(['client_id'], ['api_clients.id'], name=op.f('fk_webhook_events_client_id_api_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_events'))
    )
    op.create_index('ix_webhook_events_client_id_created_at', 'webhook_events', ['client_id', 'created_at'], unique=False)
    op.create_index('ix_webhook_events_undispatched', 'webhook_events', ['id'], unique=False, postgresql_where=sa.text('dispatched_at IS NULL'))
    op.add_column('jobs', sa.Column('batch_id', sa.UUID(), nullable=True))
    op.add_column('jobs', sa.Column('callback_url', sa.Text(), nullable=True, comment="Where this job's events are also posted, signed with the client's default endpoint's secret."))
    op.create_index(op.f('ix_jobs_batch_id'), 'jobs', ['batch_id'], unique=False)
    op.create_foreign_key(op.f('fk_jobs_batch_id_batches'), 'jobs', 'batches', ['batch_id'], ['id'], ondelete='RESTRICT')
    op.create_table('webhook_deliveries',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('event_id', sa.UUID(), nullable=False),
    sa.Column('endpoint_id', sa.UUID(), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('job_id', sa.UUID(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name=op.f('ck_webhook_deliveries_known_status')),
    sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoints.id'], name=op.f('fk_webhook_deliveries_endpoint_id_webhook_endpoints'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['event_id'], ['webhook_events.id'], name=op.f('fk_webhook_deliveries_event_id_webhook_events'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_webhook_deliveries_job_id_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries')),
    sa.UniqueConstraint('event_id', 'endpoint_id', 'url', name=op.f('uq_webhook_deliveries_event_id'))
    )
    op.create_index('ix_webhook_deliveries_endpoint_id_created_at', 'webhook_deliveries', ['endpoint_id', 'created_at'], unique=False)
    op.create_index(op.f('ix_webhook_deliveries_job_id'), 'webhook_deliveries', ['job_id'], unique=False)
    op.create_index('ix_webhook_deliveries_pending', 'webhook_deliveries', ['endpoint_id', 'created_at'], unique=False, postgresql_where=sa.text("status = 'pending'"))
    op.create_table('webhook_attempts',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('delivery_id', sa.UUID(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('latency_ms', sa.Integer(), nullable=False),
    sa.Column('response_excerpt', sa.Text(), nullable=True, comment="The first 2 KB of the answer's body."),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['delivery_id'], ['webhook_deliveries.id'], name=op.f('fk_webhook_attempts_delivery_id_webhook_deliveries'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_attempts')),
    sa.UniqueConstraint('delivery_id', 'number', name=op.f('uq_webhook_attempts_delivery_id'))
    )
    op.add_column('tracks', sa.Column('job_id', sa.UUID(), nullable=True, comment="The upload's job: whose client is told of the track's events, and at which callback_url."))
    op.create_index(op.f('ix_tracks_job_id'), 'tracks', ['job_id'], unique=False)
    op.create_foreign_key(op.f('fk_tracks_job_id_jobs'), 'tracks', 'jobs', ['job_id'], ['id'], ondelete='SET NULL')
    op.add_column('idempotency_keys', sa.Column('batch_id', sa.UUID(), nullable=True))
    op.alter_column('idempotency_keys', 'job_id', existing_type=sa.UUID(), nullable=True)
    op.create_foreign_key(op.f('fk_idempotency_keys_batch_id_batches'), 'idempotency_keys', 'batches', ['batch_id'], ['id'], ondelete='CASCADE')
    op.create_check_constraint(op.f('ck_idempotency_keys_one_subject'), 'idempotency_keys', '(job_id IS NULL) <> (batch_id IS NULL)')
    op.execute(FUNCTIONS_UP)


def downgrade() -> None:
    op.execute(FUNCTIONS_DOWN)
    op.drop_constraint(op.f('ck_idempotency_keys_one_subject'), 'idempotency_keys', type_='check')
    op.execute('DELETE FROM idempotency_keys WHERE job_id IS NULL')
    op.drop_constraint(op.f('fk_idempotency_keys_batch_id_batches'), 'idempotency_keys', type_='foreignkey')
    op.alter_column('idempotency_keys', 'job_id', existing_type=sa.UUID(), nullable=False)
    op.drop_column('idempotency_keys', 'batch_id')
    op.drop_constraint(op.f('fk_tracks_job_id_jobs'), 'tracks', type_='foreignkey')
    op.drop_index(op.f('ix_tracks_job_id'), table_name='tracks')
    op.drop_column('tracks', 'job_id')
    op.drop_table('webhook_attempts')
    op.drop_table('webhook_deliveries')
    op.drop_constraint(op.f('fk_jobs_batch_id_batches'), 'jobs', type_='foreignkey')
    op.drop_index(op.f('ix_jobs_batch_id'), table_name='jobs')
    op.drop_column('jobs', 'callback_url')
    op.drop_column('jobs', 'batch_id')
    op.drop_table('webhook_events')
    op.drop_table('webhook_endpoints')
    op.drop_table('batches')
    op.execute("UPDATE api_clients SET scopes = array_remove(array_remove(scopes, 'webhooks:write'), 'webhooks:read')")
    _replace_scopes_check(BEFORE)
