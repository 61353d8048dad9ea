"""client quotas: api_clients.jobs_per_minute and jobs_per_day (null: the settings' defaults)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0019'
down_revision: str | None = '0018'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('api_clients', sa.Column('jobs_per_minute', sa.Integer(), nullable=True, comment='Its quota of accepted jobs per minute; null: ROADIE_CLIENT_JOBS_PER_MINUTE.'))
    op.add_column('api_clients', sa.Column('jobs_per_day', sa.Integer(), nullable=True, comment='Its quota of accepted jobs per day; null: ROADIE_CLIENT_JOBS_PER_DAY.'))
    op.create_check_constraint(op.f('ck_api_clients_quotas_not_negative'), 'api_clients', 'jobs_per_minute >= 0 AND jobs_per_day >= 0')


def downgrade() -> None:
    op.drop_constraint(op.f('ck_api_clients_quotas_not_negative'), 'api_clients', type_='check')
    op.drop_column('api_clients', 'jobs_per_day')
    op.drop_column('api_clients', 'jobs_per_minute')
