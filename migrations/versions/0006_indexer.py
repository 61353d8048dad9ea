"""chain indexer cursors and decoded events (issue 4)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('indexed_transactions',
    sa.Column('signature', sa.String(length=88), nullable=False),
    sa.Column('slot', sa.BigInteger(), nullable=False),
    sa.Column('block_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('succeeded', sa.Boolean(), nullable=False, comment='False: the transaction failed on chain and changed nothing.'),
    sa.Column('error', sa.Text(), nullable=True, comment='Why the decoder refused it (a poison row).'),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('confirmed', 'finalized')", name=op.f('ck_indexed_transactions_known_status')),
    sa.CheckConstraint('slot >= 0', name=op.f('ck_indexed_transactions_slot_not_negative')),
    sa.PrimaryKeyConstraint('signature', name=op.f('pk_indexed_transactions'))
    )
    op.create_index('ix_indexed_transactions_poison', 'indexed_transactions', ['slot'], unique=False, postgresql_where=sa.text('error IS NOT NULL'))
    op.create_index('ix_indexed_transactions_unfinalized', 'indexed_transactions', ['slot'], unique=False, postgresql_where=sa.text("status = 'confirmed'"))
    op.create_table('indexer_cursors',
    sa.Column('address', sa.String(length=44), nullable=False),
    sa.Column('signature', sa.String(length=88), nullable=True),
    sa.Column('slot', sa.BigInteger(), nullable=True),
    sa.Column('head_slot', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('(signature IS NULL) = (slot IS NULL)', name=op.f('ck_indexer_cursors_signature_has_slot')),
    sa.CheckConstraint('slot >= 0 AND head_slot >= 0', name=op.f('ck_indexer_cursors_slots_not_negative')),
    sa.PrimaryKeyConstraint('address', name=op.f('pk_indexer_cursors'))
    )
    op.create_table('chain_events',
    sa.Column('signature', sa.String(length=88), nullable=False),
    sa.Column('instruction_index', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('program', sa.String(length=44), nullable=False),
    sa.Column('mint', sa.String(length=44), nullable=True),
    sa.Column('source', sa.String(length=44), nullable=True),
    sa.Column('destination', sa.String(length=44), nullable=True),
    sa.Column('authority', sa.String(length=44), nullable=True),
    sa.Column('owner', sa.String(length=44), nullable=True),
    sa.Column('previous_owner', sa.String(length=44), nullable=True),
    sa.Column('amount', sa.Numeric(precision=39, scale=0), nullable=True),
    sa.Column('memo', sa.Text(), nullable=True),
    sa.CheckConstraint("kind IN ('nft_mint', 'nft_transfer', 'token_transfer', 'memo')", name=op.f('ck_chain_events_known_kind')),
    sa.CheckConstraint('amount >= 0', name=op.f('ck_chain_events_amount_not_negative')),
    sa.CheckConstraint('instruction_index >= 0', name=op.f('ck_chain_events_instruction_index_not_negative')),
    sa.ForeignKeyConstraint(['signature'], ['indexed_transactions.signature'], name=op.f('fk_chain_events_signature_indexed_transactions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('signature', 'instruction_index', name=op.f('pk_chain_events'))
    )
    op.create_index('ix_chain_events_mint_kind', 'chain_events', ['mint', 'kind'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_chain_events_mint_kind', table_name='chain_events')
    op.drop_table('chain_events')
    op.drop_table('indexer_cursors')
    op.drop_index('ix_indexed_transactions_unfinalized', table_name='indexed_transactions', postgresql_where=sa.text("status = 'confirmed'"))
    op.drop_index('ix_indexed_transactions_poison', table_name='indexed_transactions', postgresql_where=sa.text('error IS NOT NULL'))
    op.drop_table('indexed_transactions')
