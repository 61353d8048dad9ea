"""job priorities: jobs.priority, 0 (lowest) to 9 (highest), 5 by default

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0018'
down_revision: str | None = '0017'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        'jobs',
        sa.Column('priority', sa.SmallInteger(), server_default='5', nullable=False, comment='0 lowest, 9 highest.'),
    )
    op.create_check_constraint(op.f('ck_jobs_priority_in_range'), 'jobs', 'priority BETWEEN 0 AND 9')


def downgrade() -> None:
    op.drop_constraint(op.f('ck_jobs_priority_in_range'), 'jobs', type_='check')
    op.drop_column('jobs', 'priority')
