"""retention: index idempotency_keys.job_id (a purged job's key is found by it, not by a scan per job)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 14:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0017'
down_revision: str | None = '0016'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f('ix_idempotency_keys_job_id'), 'idempotency_keys', ['job_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_idempotency_keys_job_id'), table_name='idempotency_keys')
