"""Solana mints and payout transfers with a send-once journal (issue 4)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('payout_batches',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('mint_address', sa.String(length=44), nullable=False),
    sa.Column('total', sa.Numeric(precision=39, scale=0), nullable=False, comment='Sum of the transfers, base units of mint_address.'),
    sa.Column('status', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=True),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status <> 'failed' OR error_code IS NOT NULL", name=op.f('ck_payout_batches_failed_has_error')),
    sa.CheckConstraint("status IN ('pending', 'submitted', 'confirmed', 'finalized', 'failed')", name=op.f('ck_payout_batches_known_status')),
    sa.CheckConstraint('total > 0', name=op.f('ck_payout_batches_total_positive')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_payout_batches_job_id_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payout_batches')),
    sa.UniqueConstraint('key', name=op.f('uq_payout_batches_key'))
    )
    op.create_index(op.f('ix_payout_batches_job_id'), 'payout_batches', ['job_id'], unique=False)
    op.create_index(op.f('ix_payout_batches_status'), 'payout_batches', ['status'], unique=False)
    op.create_table('chain_sends',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('nft_id', sa.UUID(), nullable=True),
    sa.Column('batch_id', sa.UUID(), nullable=True),
    sa.Column('signature', sa.String(length=88), nullable=False),
    sa.Column('signed_transaction', sa.LargeBinary(), nullable=False, comment='The exact bytes sent (and re-sent); signatures only, no secret.'),
    sa.Column('last_valid_block_height', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('slot', sa.BigInteger(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("(purpose = 'nft_mint') = (nft_id IS NOT NULL)", name=op.f('ck_chain_sends_mint_has_nft')),
    sa.CheckConstraint("(purpose = 'payout') = (batch_id IS NOT NULL)", name=op.f('ck_chain_sends_payout_has_batch')),
    sa.CheckConstraint("purpose IN ('nft_mint', 'payout')", name=op.f('ck_chain_sends_known_purpose')),
    sa.CheckConstraint("status IN ('pending', 'confirmed', 'finalized', 'failed', 'expired')", name=op.f('ck_chain_sends_known_status')),
    sa.CheckConstraint("status NOT IN ('confirmed', 'finalized') OR slot IS NOT NULL", name=op.f('ck_chain_sends_landed_has_slot')),
    sa.CheckConstraint('octet_length(signed_transaction) <= 1232', name=op.f('ck_chain_sends_fits_a_packet')),
    sa.CheckConstraint('slot >= 0', name=op.f('ck_chain_sends_slot_not_negative')),
    sa.ForeignKeyConstraint(['batch_id'], ['payout_batches.id'], name=op.f('fk_chain_sends_batch_id_payout_batches'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['nft_id'], ['nfts.id'], name=op.f('fk_chain_sends_nft_id_nfts'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chain_sends')),
    sa.UniqueConstraint('signature', name=op.f('uq_chain_sends_signature'))
    )
    op.create_index(op.f('ix_chain_sends_batch_id'), 'chain_sends', ['batch_id'], unique=False)
    op.create_index(op.f('ix_chain_sends_nft_id'), 'chain_sends', ['nft_id'], unique=False)
    op.create_index(op.f('ix_chain_sends_status'), 'chain_sends', ['status'], unique=False)
    op.create_index('uq_chain_sends_pending_nft', 'chain_sends', ['nft_id'], unique=True, postgresql_where=sa.text("status = 'pending'"))
    op.create_table('payout_transfers',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('batch_id', sa.UUID(), nullable=False),
    sa.Column('recipient_wallet', sa.String(length=44), nullable=False),
    sa.Column('amount', sa.Numeric(precision=39, scale=0), nullable=False, comment="Base units of the batch's mint."),
    sa.Column('status', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('send_id', sa.UUID(), nullable=True),
    sa.Column('signature', sa.String(length=88), nullable=True),
    sa.Column('instruction_index', sa.SmallInteger(), nullable=True),
    sa.Column('slot', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'submitted', 'confirmed', 'finalized', 'failed')", name=op.f('ck_payout_transfers_known_status')),
    sa.CheckConstraint("status NOT IN ('submitted', 'confirmed', 'finalized') OR (signature IS NOT NULL AND send_id IS NOT NULL)", name=op.f('ck_payout_transfers_submitted_has_signature')),
    sa.CheckConstraint('amount > 0', name=op.f('ck_payout_transfers_amount_positive')),
    sa.CheckConstraint('slot >= 0', name=op.f('ck_payout_transfers_slot_not_negative')),
    sa.ForeignKeyConstraint(['batch_id'], ['payout_batches.id'], name=op.f('fk_payout_transfers_batch_id_payout_batches'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['send_id'], ['chain_sends.id'], name=op.f('fk_payout_transfers_send_id_chain_sends'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payout_transfers')),
    sa.UniqueConstraint('batch_id', 'recipient_wallet', name=op.f('uq_payout_transfers_batch_id')),
    sa.UniqueConstraint('signature', 'instruction_index', name=op.f('uq_payout_transfers_signature'))
    )
    op.create_index(op.f('ix_payout_transfers_recipient_wallet'), 'payout_transfers', ['recipient_wallet'], unique=False)
    op.create_index(op.f('ix_payout_transfers_send_id'), 'payout_transfers', ['send_id'], unique=False)
    op.create_index(op.f('ix_payout_transfers_signature'), 'payout_transfers', ['signature'], unique=False)
    op.create_index(op.f('ix_payout_transfers_status'), 'payout_transfers', ['status'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_payout_transfers_status'), table_name='payout_transfers')
    op.drop_index(op.f('ix_payout_transfers_signature'), table_name='payout_transfers')
    op.drop_index(op.f('ix_payout_transfers_send_id'), table_name='payout_transfers')
    op.drop_index(op.f('ix_payout_transfers_recipient_wallet'), table_name='payout_transfers')
    op.drop_table('payout_transfers')
    op.drop_index('uq_chain_sends_pending_nft', table_name='chain_sends', postgresql_where=sa.text("status = 'pending'"))
    op.drop_index(op.f('ix_chain_sends_status'), table_name='chain_sends')
    op.drop_index(op.f('ix_chain_sends_nft_id'), table_name='chain_sends')
    op.drop_index(op.f('ix_chain_sends_batch_id'), table_name='chain_sends')
    op.drop_table('chain_sends')
    op.drop_index(op.f('ix_payout_batches_status'), table_name='payout_batches')
    op.drop_index(op.f('ix_payout_batches_job_id'), table_name='payout_batches')
    op.drop_table('payout_batches')
