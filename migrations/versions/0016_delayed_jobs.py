"""delayed jobs: the 'scheduled' job status and jobs.run_at

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0016'
down_revision: str | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES_BEFORE = ('queued', 'running', 'retrying', 'waiting', 'succeeded', 'failed', 'cancelled')
STATUSES_AFTER = ('scheduled', *STATUSES_BEFORE)


def _known_status(values: tuple[str, ...]) -> None:
    op.drop_constraint(op.f('ck_jobs_known_status'), 'jobs', type_='check')
    op.create_check_constraint(op.f('ck_jobs_known_status'), 'jobs', f"status IN ({', '.join(repr(v) for v in values)})")


def upgrade() -> None:
    op.add_column(
        'jobs',
        sa.Column(
            'run_at',
            sa.DateTime(timezone=True),
            nullable=True,
            comment='When a delayed job became or becomes due; null: it was due when accepted.',
        ),
    )
    _known_status(STATUSES_AFTER)


def downgrade() -> None:
    # A scheduled job becomes queued; its outbox row still holds it back until its time.
    op.execute("UPDATE jobs SET status = 'queued' WHERE status = 'scheduled'")
    _known_status(STATUSES_BEFORE)
    op.drop_column('jobs', 'run_at')
