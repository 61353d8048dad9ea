"""chain_sends.fee_lamports: what each landed transaction of the platform paid (meta.fee)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 20:00:00.000000

Transactions now carry a compute budget and a priority fee; the fee they paid is recorded once they land.
Rows written before stay NULL (their fee was the signatures' 5,000 lamports each).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        'chain_sends',
        sa.Column(
            'fee_lamports',
            sa.BigInteger(),
            nullable=True,
            comment='What it paid once landed (meta.fee): signatures plus compute-unit limit x price.',
        ),
    )
    op.create_check_constraint(op.f('ck_chain_sends_fee_not_negative'), 'chain_sends', 'fee_lamports >= 0')


def downgrade() -> None:
    op.drop_constraint(op.f('ck_chain_sends_fee_not_negative'), 'chain_sends', type_='check')
    op.drop_column('chain_sends', 'fee_lamports')
