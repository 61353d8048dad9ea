"""track ingest (issue 3): track files live in the blob store before they are pinned; new API scopes;
measured track fields; parent jobs wait for their children off the workers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_SCOPES = ('jobs:write', 'jobs:read', 'admin')
SCOPES = ('jobs:write', 'jobs:read', 'tracks:write', 'plays:write', 'sales:write', 'ledger:read', 'admin')
OLD_STATUSES = ('queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled')
STATUSES = ('queued', 'running', 'retrying', 'waiting', 'succeeded', 'failed', 'cancelled')
OLD_OUTCOMES = ('running', 'succeeded', 'failed', 'retrying', 'lost', 'cancelled')
OUTCOMES = (*OLD_OUTCOMES, 'waiting')

# A child job that finishes re-queues its waiting parent through the outbox, in the child's own
# transaction, whichever process finished it (worker, reaper, cancel). The UPDATE locks the parent's
# row, as the runtime's record_wait does, so a child that finishes while the parent's handler runs
# is noticed by one of the two.
WAKE_PARENT = """
CREATE FUNCTION roadie_wake_parent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE jobs SET status = 'queued', updated_at = now() WHERE id = NEW.parent_id AND status = 'waiting';
    IF FOUND THEN
        INSERT INTO outbox (job_id) VALUES (NEW.parent_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_wake_parent AFTER UPDATE OF status ON jobs FOR EACH ROW
    WHEN (NEW.parent_id IS NOT NULL AND NEW.status IN ('succeeded', 'failed', 'cancelled')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION roadie_wake_parent();
"""


def _replace_scopes_check(scopes: Sequence[str]) -> None:
    """API clients may hold the scopes of the new endpoints (tracks, plays, sales, ledger)."""
    op.drop_constraint(op.f('ck_api_clients_known_scopes'), 'api_clients', type_='check')
    listed = ', '.join(f"'{scope}'" for scope in scopes)
    op.create_check_constraint(op.f('ck_api_clients_known_scopes'), 'api_clients', f"scopes <@ ARRAY[{listed}]::varchar[]")


def _replace_in_list_check(table: str, name: str, column: str, values: Sequence[str]) -> None:
    op.drop_constraint(op.f(f'ck_{table}_{name}'), table, type_='check')
    listed = ', '.join(f"'{value}'" for value in values)
    op.create_check_constraint(op.f(f'ck_{table}_{name}'), table, f"{column} IN ({listed})")


def upgrade() -> None:
    op.add_column('track_files', sa.Column('storage_key', sa.String(length=300), nullable=True, comment='Where the bytes are in the blob store (roadie.blobs); null once released.'))
    op.add_column('track_files', sa.Column('sha256', sa.String(length=64), nullable=True))
    op.alter_column('track_files', 'cid', existing_type=sa.String(length=100), nullable=True, comment='CIDv1 base32; null until pinned.')
    op.create_check_constraint(op.f('ck_track_files_sha256_is_hex'), 'track_files', "sha256 ~ '^[0-9a-f]{64}$'")
    _replace_scopes_check(SCOPES)
    op.create_check_constraint(op.f('ck_track_files_pinned_has_cid'), 'track_files', "pin_state <> 'pinned' OR cid IS NOT NULL")
    op.add_column('tracks', sa.Column('preview_start_ms', sa.Integer(), nullable=True, comment="Where the artist's 30-second preview starts; null: a third of the way in."))
    op.add_column('tracks', sa.Column('loudness_range_lu', sa.Numeric(precision=6, scale=2), nullable=True))
    op.add_column('tracks', sa.Column('rms_dbfs', sa.Numeric(precision=6, scale=2), nullable=True, comment='Mean RMS level; -120 for silence.'))
    op.create_check_constraint(op.f('ck_tracks_preview_start_not_negative'), 'tracks', 'preview_start_ms >= 0')
    _replace_in_list_check('jobs', 'known_status', 'status', STATUSES)
    _replace_in_list_check('job_attempts', 'known_outcome', 'outcome', OUTCOMES)
    op.execute(WAKE_PARENT)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS jobs_wake_parent ON jobs; DROP FUNCTION IF EXISTS roadie_wake_parent();")
    op.execute("UPDATE jobs SET status = 'queued' WHERE status = 'waiting'")
    op.execute("UPDATE job_attempts SET outcome = 'succeeded' WHERE outcome = 'waiting'")
    _replace_in_list_check('job_attempts', 'known_outcome', 'outcome', OLD_OUTCOMES)
    _replace_in_list_check('jobs', 'known_status', 'status', OLD_STATUSES)
    op.drop_constraint(op.f('ck_tracks_preview_start_not_negative'), 'tracks', type_='check')
    op.drop_column('tracks', 'rms_dbfs')
    op.drop_column('tracks', 'loudness_range_lu')
    op.drop_column('tracks', 'preview_start_ms')
    _replace_scopes_check(OLD_SCOPES)
    op.drop_constraint(op.f('ck_track_files_pinned_has_cid'), 'track_files', type_='check')
    op.drop_constraint(op.f('ck_track_files_sha256_is_hex'), 'track_files', type_='check')
    op.alter_column('track_files', 'cid', existing_type=sa.String(length=100), nullable=False, comment=None)
    op.drop_column('track_files', 'sha256')
    op.drop_column('track_files', 'storage_key')
