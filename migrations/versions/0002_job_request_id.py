"""jobs.request_id: the X-Request-ID a job was created under (nullable; adding it rewrites nothing)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 01:15:03.925668
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('request_id', sa.String(length=128), nullable=True, comment='X-Request-ID of the request that created it; its log lines carry it.'))


def downgrade() -> None:
    op.drop_column('jobs', 'request_id')
