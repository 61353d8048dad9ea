"""payout holds: owed balances whose wallet cannot receive, flagged for an admin

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 10:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('payout_holds',
    sa.Column('account_id', sa.BigInteger(), nullable=False),
    sa.Column('wallet', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=300), nullable=False),
    sa.Column('last_period_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('held_since', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['ledger_accounts.id'], name=op.f('fk_payout_holds_account_id_ledger_accounts'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('account_id', name=op.f('pk_payout_holds'))
    )


def downgrade() -> None:
    op.drop_table('payout_holds')
