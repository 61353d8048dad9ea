"""stake deposits and escrow sales the indexer read, and the chain event kinds that carry them (issue 16)

Revision ID: 0013
Revises: 0014
Create Date: 2026-12-03 19:54:55.768073
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


KINDS = "kind IN ('nft_mint', 'nft_transfer', 'token_transfer', 'stake_deposit', 'payment', 'memo')"
OLD_KINDS = "kind IN ('nft_mint', 'nft_transfer', 'token_transfer', 'memo')"


def upgrade() -> None:
    op.drop_constraint(op.f('ck_chain_events_known_kind'), 'chain_events', type_='check')
    op.create_check_constraint(op.f('ck_chain_events_known_kind'), 'chain_events', KINDS)
    op.create_table('indexed_deposits',
    sa.Column('signature', sa.String(length=88), nullable=False),
    sa.Column('instruction_index', sa.Integer(), nullable=False),
    sa.Column('wallet', sa.String(length=44), nullable=False, comment="The staker: the transfer's signing authority."),
    sa.Column('mint', sa.String(length=44), nullable=False),
    sa.Column('amount', sa.Numeric(precision=39, scale=0), nullable=False),
    sa.Column('memo', sa.Text(), nullable=True),
    sa.Column('rate_bps', sa.Integer(), nullable=True),
    sa.Column('rate_kind', sa.String(length=3), nullable=True),
    sa.Column('lock_seconds', sa.BigInteger(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('position_id', sa.UUID(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("(status = 'booked') = (position_id IS NOT NULL)", name=op.f('ck_indexed_deposits_booked_is_linked')),
    sa.CheckConstraint("(status = 'refused') = (error_code IS NOT NULL)", name=op.f('ck_indexed_deposits_refused_has_error')),
    sa.CheckConstraint("status IN ('pending', 'booked', 'refused')", name=op.f('ck_indexed_deposits_known_status')),
    sa.CheckConstraint('amount >= 0', name=op.f('ck_indexed_deposits_amount_not_negative')),
    sa.ForeignKeyConstraint(['position_id'], ['staking_positions.id'], name=op.f('fk_indexed_deposits_position_id_staking_positions'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['signature'], ['indexed_transactions.signature'], name=op.f('fk_indexed_deposits_signature_indexed_transactions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('signature', 'instruction_index', name=op.f('pk_indexed_deposits')),
    sa.UniqueConstraint('position_id', name=op.f('uq_indexed_deposits_position_id'))
    )
    op.create_index('ix_indexed_deposits_unsettled', 'indexed_deposits', ['status'], unique=False, postgresql_where=sa.text("status <> 'booked'"))
    op.create_table('indexed_sales',
    sa.Column('signature', sa.String(length=88), nullable=False),
    sa.Column('nft_mint', sa.String(length=44), nullable=False),
    sa.Column('buyer', sa.String(length=44), nullable=True),
    sa.Column('seller', sa.String(length=44), nullable=True),
    sa.Column('payment_mint', sa.String(length=44), nullable=True),
    sa.Column('price', sa.Numeric(precision=39, scale=0), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('sale_id', sa.UUID(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("(status = 'booked') = (sale_id IS NOT NULL)", name=op.f('ck_indexed_sales_booked_is_linked')),
    sa.CheckConstraint("(status = 'refused') = (error_code IS NOT NULL)", name=op.f('ck_indexed_sales_refused_has_error')),
    sa.CheckConstraint("status IN ('pending', 'booked', 'refused')", name=op.f('ck_indexed_sales_known_status')),
    sa.CheckConstraint('price >= 0', name=op.f('ck_indexed_sales_price_not_negative')),
    sa.ForeignKeyConstraint(['sale_id'], ['sales.id'], name=op.f('fk_indexed_sales_sale_id_sales'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['signature'], ['indexed_transactions.signature'], name=op.f('fk_indexed_sales_signature_indexed_transactions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('signature', name=op.f('pk_indexed_sales')),
    sa.UniqueConstraint('sale_id', name=op.f('uq_indexed_sales_sale_id'))
    )
    op.create_index('ix_indexed_sales_unsettled', 'indexed_sales', ['status'], unique=False, postgresql_where=sa.text("status <> 'booked'"))


def downgrade() -> None:
    op.drop_index('ix_indexed_sales_unsettled', table_name='indexed_sales', postgresql_where=sa.text("status <> 'booked'"))
    op.drop_table('indexed_sales')
    op.drop_index('ix_indexed_deposits_unsettled', table_name='indexed_deposits', postgresql_where=sa.text("status <> 'booked'"))
    op.drop_table('indexed_deposits')
    op.execute("DELETE FROM chain_events WHERE kind IN ('stake_deposit', 'payment')")
    op.drop_constraint(op.f('ck_chain_events_known_kind'), 'chain_events', type_='check')
    op.create_check_constraint(op.f('ck_chain_events_known_kind'), 'chain_events', OLD_KINDS)
