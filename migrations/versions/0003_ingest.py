"""track ingest (issue 3): track files live in the blob store before they are pinned; new API scopes

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


def _replace_scopes_check(scopes: Sequence[str]) -> None:
    """API clients may hold the scopes of the new endpoints (tracks, plays, sales, ledger)."""
    op.drop_constraint(op.f('ck_api_clients_known_scopes'), 'api_clients', type_='check')
    listed = ', '.join(f"'{scope}'" for scope in scopes)
    op.create_check_constraint(op.f('ck_api_clients_known_scopes'), 'api_clients', f"scopes <@ ARRAY[{listed}]::varchar[]")


def upgrade() -> None:
    op.add_column('track_files', sa.Column('storage_key', sa.String(length=300), nullable=True, comment='Where the bytes are in the blob store (roadie.blobs); null once released.'))
    op.add_column('track_files', sa.Column('sha256', sa.String(length=64), nullable=True))
    op.alter_column('track_files', 'cid', existing_type=sa.String(length=100), nullable=True, comment='CIDv1 base32; null until pinned.')
    op.create_check_constraint(op.f('ck_track_files_sha256_is_hex'), 'track_files', "sha256 ~ '^[0-9a-f]{64}$'")
    _replace_scopes_check(SCOPES)
    op.create_check_constraint(op.f('ck_track_files_pinned_has_cid'), 'track_files', "pin_state <> 'pinned' OR cid IS NOT NULL")


def downgrade() -> None:
    _replace_scopes_check(OLD_SCOPES)
    op.drop_constraint(op.f('ck_track_files_pinned_has_cid'), 'track_files', type_='check')
    op.drop_constraint(op.f('ck_track_files_sha256_is_hex'), 'track_files', type_='check')
    op.alter_column('track_files', 'cid', existing_type=sa.String(length=100), nullable=False, comment=None)
    op.drop_column('track_files', 'sha256')
    op.drop_column('track_files', 'storage_key')
