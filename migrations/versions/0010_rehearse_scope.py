"""jobs:rehearse scope: platform.echo (sleeps and failures on purpose) is no longer open to every jobs:write key

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 15:00:00.000000

Keys that could submit platform.echo before keep that power: each live key with jobs:write gains
jobs:rehearse, so no upstream app breaks on upgrade; revoke or rotate keys to take it away.
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ('jobs:write', 'jobs:read', 'tracks:write', 'plays:write', 'sales:write', 'ledger:read', 'admin')
AFTER = ('jobs:write', 'jobs:read', 'jobs:rehearse', 'tracks:write', 'plays:write', 'sales:write', 'ledger:read', 'admin')


def _replace_scopes_check(scopes: Sequence[str]) -> None:
    op.drop_constraint(op.f('ck_api_clients_known_scopes'), 'api_clients', type_='check')
    listed = ', '.join(f"'{scope}'" for scope in scopes)
    op.create_check_constraint(op.f('ck_api_clients_known_scopes'), 'api_clients', f"scopes <@ ARRAY[{listed}]::varchar[]")


def upgrade() -> None:
    _replace_scopes_check(AFTER)
    op.execute(
        "UPDATE api_clients SET scopes = array_append(scopes, 'jobs:rehearse') "
        "WHERE 'jobs:write' = ANY(scopes) AND revoked_at IS NULL"
    )


def downgrade() -> None:
    op.execute("UPDATE api_clients SET scopes = array_remove(scopes, 'jobs:rehearse')")
    _replace_scopes_check(BEFORE)
