"""double-entry ledger, plays, staking and royalties (issue 5)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The rules the models cannot say: a statement that inserts entries must leave every transaction it touches
# balanced (so a transaction's entries go in with one statement); entries are never changed or deleted;
# ledger_accounts.balance is the running sum of the account's entries, under its CHECK (no negative balance).
TRIGGERS_UP = """
CREATE FUNCTION ledger_entries_post() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1
        FROM (SELECT DISTINCT transaction_id FROM new_entries) AS touched
        JOIN ledger_entries AS e USING (transaction_id)
        GROUP BY touched.transaction_id
        HAVING sum(e.amount) <> 0
    ) THEN
        RAISE EXCEPTION 'ledger transaction does not balance' USING ERRCODE = 'check_violation',
            CONSTRAINT = 'ledger_transaction_balanced';
    END IF;
    UPDATE ledger_accounts AS a SET balance = a.balance + moved.total
    FROM (SELECT account_id, sum(amount) AS total FROM new_entries GROUP BY account_id) AS moved
    WHERE a.id = moved.account_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER ledger_entries_post AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_post();

CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are append-only' USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();

CREATE FUNCTION sales_creators_complete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM sales AS s JOIN sale_creators AS c ON c.sale_id = s.id
        WHERE s.id = NEW.id
        GROUP BY s.royalty
        HAVING sum(c.share) = 100 AND sum(c.amount) = s.royalty
    ) THEN
        RAISE EXCEPTION 'creator shares of sale % must sum to 100 and their parts to the royalty', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'sale_creators_complete';
    END IF;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER sales_creators_complete AFTER INSERT ON sales
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sales_creators_complete();
"""

TRIGGERS_DOWN = """
DROP TRIGGER sales_creators_complete ON sales;
DROP FUNCTION sales_creators_complete();
DROP TRIGGER ledger_entries_append_only ON ledger_entries;
DROP FUNCTION ledger_entries_append_only();
DROP TRIGGER ledger_entries_post ON ledger_entries;
DROP FUNCTION ledger_entries_post();
"""


def upgrade() -> None:
    op.create_table('ledger_runs',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('period_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('result', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("kind IN ('rewards', 'royalties', 'staking')", name=op.f('ck_ledger_runs_known_kind')),
    sa.CheckConstraint('period_end > period_start', name=op.f('ck_ledger_runs_period_not_empty')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_runs')),
    sa.UniqueConstraint('kind', 'period_start', name=op.f('uq_ledger_runs_kind'))
    )
    op.create_table('ledger_accounts',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=True),
    sa.Column('balance', sa.Numeric(precision=39, scale=0), server_default=sa.text('0'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("(user_id IS NULL) = (kind IN ('external', 'treasury', 'clearing'))", name=op.f('ck_ledger_accounts_owner_matches_kind')),
    sa.CheckConstraint("balance >= 0 OR kind = 'external'", name=op.f('ck_ledger_accounts_balance_not_negative')),
    sa.CheckConstraint("kind IN ('external', 'treasury', 'clearing', 'rewards', 'royalties', 'staking', 'stake')", name=op.f('ck_ledger_accounts_known_kind')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_ledger_accounts_user_id_users'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_accounts')),
    sa.UniqueConstraint('kind', 'user_id', name=op.f('uq_ledger_accounts_kind'), postgresql_nulls_not_distinct=True)
    )
    op.create_index(op.f('ix_ledger_accounts_user_id'), 'ledger_accounts', ['user_id'], unique=False)
    op.create_table('ledger_transactions',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.Column('effective_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('memo', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("kind IN ('funding', 'rewards', 'royalties', 'staking', 'stake', 'unstake', 'payout', 'payout_settled')", name=op.f('ck_ledger_transactions_known_kind')),
    sa.ForeignKeyConstraint(['run_id'], ['ledger_runs.id'], name=op.f('fk_ledger_transactions_run_id_ledger_runs'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_transactions')),
    sa.UniqueConstraint('key', name=op.f('uq_ledger_transactions_key'))
    )
    op.create_index(op.f('ix_ledger_transactions_run_id'), 'ledger_transactions', ['run_id'], unique=False)
    op.create_table('ledger_entries',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('transaction_id', sa.BigInteger(), nullable=False),
    sa.Column('account_id', sa.BigInteger(), nullable=False),
    sa.Column('amount', sa.Numeric(precision=39, scale=0), nullable=False),
    sa.CheckConstraint('amount <> 0', name=op.f('ck_ledger_entries_amount_not_zero')),
    sa.ForeignKeyConstraint(['account_id'], ['ledger_accounts.id'], name=op.f('fk_ledger_entries_account_id_ledger_accounts'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['transaction_id'], ['ledger_transactions.id'], name=op.f('fk_ledger_entries_transaction_id_ledger_transactions'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_entries')),
    sa.UniqueConstraint('transaction_id', 'account_id', name=op.f('uq_ledger_entries_transaction_id'))
    )
    op.create_index('ix_ledger_entries_account_id_id', 'ledger_entries', ['account_id', 'id'], unique=False)
    op.create_table('payouts',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('account_id', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('amount', sa.Numeric(precision=39, scale=0), nullable=False),
    sa.Column('wallet', sa.String(length=64), nullable=False),
    sa.Column('batch_key', sa.String(length=100), nullable=False),
    sa.Column('batch_id', sa.UUID(), nullable=True),
    sa.Column('status', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('transaction_id', sa.BigInteger(), nullable=False),
    sa.Column('settled_transaction_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("(status = 'finalized') = (settled_transaction_id IS NOT NULL)", name=op.f('ck_payouts_paid_when_finalized')),
    sa.CheckConstraint("status IN ('pending', 'submitted', 'confirmed', 'finalized', 'failed')", name=op.f('ck_payouts_known_status')),
    sa.CheckConstraint('amount > 0', name=op.f('ck_payouts_amount_positive')),
    sa.ForeignKeyConstraint(['account_id'], ['ledger_accounts.id'], name=op.f('fk_payouts_account_id_ledger_accounts'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['batch_id'], ['payout_batches.id'], name=op.f('fk_payouts_batch_id_payout_batches'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['settled_transaction_id'], ['ledger_transactions.id'], name=op.f('fk_payouts_settled_transaction_id_ledger_transactions'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['transaction_id'], ['ledger_transactions.id'], name=op.f('fk_payouts_transaction_id_ledger_transactions'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payouts')),
    sa.UniqueConstraint('account_id', 'period_start', name=op.f('uq_payouts_account_id')),
    sa.UniqueConstraint('settled_transaction_id', name=op.f('uq_payouts_settled_transaction_id'))
    )
    op.create_index(op.f('ix_payouts_batch_id'), 'payouts', ['batch_id'], unique=False)
    op.create_index(op.f('ix_payouts_batch_key'), 'payouts', ['batch_key'], unique=False)
    op.create_index('ix_payouts_period_start', 'payouts', ['period_start'], unique=False)
    op.create_index('ix_payouts_status', 'payouts', ['status'], unique=False)
    op.create_table('plays',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('event_id', sa.String(length=128), nullable=False),
    sa.Column('listener_id', sa.UUID(), nullable=False),
    sa.Column('track_id', sa.UUID(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ms_listened', sa.Integer(), nullable=False),
    sa.Column('client', sa.String(length=64), nullable=False),
    sa.Column('api_client_id', sa.UUID(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.Column('counted', sa.Boolean(), nullable=True),
    sa.CheckConstraint('(run_id IS NULL) = (counted IS NULL)', name=op.f('ck_plays_counted_once_accrued')),
    sa.CheckConstraint('ms_listened >= 0', name=op.f('ck_plays_ms_listened_not_negative')),
    sa.ForeignKeyConstraint(['api_client_id'], ['api_clients.id'], name=op.f('fk_plays_api_client_id_api_clients'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['listener_id'], ['users.id'], name=op.f('fk_plays_listener_id_users'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['run_id'], ['ledger_runs.id'], name=op.f('fk_plays_run_id_ledger_runs'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['track_id'], ['tracks.id'], name=op.f('fk_plays_track_id_tracks'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_plays')),
    sa.UniqueConstraint('event_id', name=op.f('uq_plays_event_id'))
    )
    op.create_index('ix_plays_counted_listener_day', 'plays', ['listener_id', 'started_at'], unique=False, postgresql_where=sa.text('counted'))
    op.create_index(op.f('ix_plays_track_id'), 'plays', ['track_id'], unique=False)
    op.create_index('ix_plays_unaccrued_received_at', 'plays', ['received_at'], unique=False, postgresql_where=sa.text('run_id IS NULL'))
    op.create_table('staking_payouts',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('position_id', sa.UUID(), nullable=False),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('accrued_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('accrued_to', sa.DateTime(timezone=True), nullable=False),
    sa.Column('amount', sa.Numeric(precision=39, scale=0), nullable=False),
    sa.Column('carry_after', sa.Numeric(precision=39, scale=0), nullable=False),
    sa.Column('transaction_id', sa.BigInteger(), nullable=True),
    sa.CheckConstraint('accrued_to > accrued_from', name=op.f('ck_staking_payouts_accrued_interval_not_empty')),
    sa.CheckConstraint('amount >= 0 AND carry_after >= 0', name=op.f('ck_staking_payouts_amounts_not_negative')),
    sa.ForeignKeyConstraint(['position_id'], ['staking_positions.id'], name=op.f('fk_staking_payouts_position_id_staking_positions'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['transaction_id'], ['ledger_transactions.id'], name=op.f('fk_staking_payouts_transaction_id_ledger_transactions'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staking_payouts')),
    sa.UniqueConstraint('position_id', 'period_start', name=op.f('uq_staking_payouts_position_id'))
    )
    op.create_index(op.f('ix_staking_payouts_transaction_id'), 'staking_payouts', ['transaction_id'], unique=False)
    op.create_table('sales',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('signature', sa.String(length=88), nullable=False),
    sa.Column('nft_id', sa.UUID(), nullable=False),
    sa.Column('price', sa.Numeric(precision=39, scale=0), nullable=False),
    sa.Column('seller_fee_basis_points', sa.Integer(), nullable=False),
    sa.Column('royalty', sa.Numeric(precision=39, scale=0), nullable=False),
    sa.Column('sold_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.CheckConstraint("source IN ('api', 'indexer')", name=op.f('ck_sales_known_source')),
    sa.CheckConstraint('price >= 0', name=op.f('ck_sales_price_not_negative')),
    sa.CheckConstraint('royalty = div(price * seller_fee_basis_points, 10000)', name=op.f('ck_sales_royalty_is_floor_of_fee')),
    sa.CheckConstraint('seller_fee_basis_points BETWEEN 0 AND 10000', name=op.f('ck_sales_seller_fee_is_bps')),
    sa.ForeignKeyConstraint(['nft_id'], ['nfts.id'], name=op.f('fk_sales_nft_id_nfts'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['run_id'], ['ledger_runs.id'], name=op.f('fk_sales_run_id_ledger_runs'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sales')),
    sa.UniqueConstraint('signature', name=op.f('uq_sales_signature'))
    )
    op.create_index(op.f('ix_sales_nft_id'), 'sales', ['nft_id'], unique=False)
    op.create_index(op.f('ix_sales_run_id'), 'sales', ['run_id'], unique=False)
    op.create_index('ix_sales_undistributed_recorded_at', 'sales', ['recorded_at'], unique=False, postgresql_where=sa.text('run_id IS NULL'))
    op.create_table('sale_creators',
    sa.Column('sale_id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('share', sa.SmallInteger(), nullable=False),
    sa.Column('amount', sa.Numeric(precision=39, scale=0), nullable=False),
    sa.CheckConstraint('amount >= 0', name=op.f('ck_sale_creators_amount_not_negative')),
    sa.CheckConstraint('share BETWEEN 0 AND 100', name=op.f('ck_sale_creators_share_is_percent')),
    sa.ForeignKeyConstraint(['sale_id'], ['sales.id'], name=op.f('fk_sale_creators_sale_id_sales'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_sale_creators_user_id_users'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('sale_id', 'user_id', name=op.f('pk_sale_creators'))
    )
    op.execute(TRIGGERS_UP)


def downgrade() -> None:
    op.execute(TRIGGERS_DOWN)
    op.drop_table('sale_creators')
    op.drop_index('ix_sales_undistributed_recorded_at', table_name='sales', postgresql_where=sa.text('run_id IS NULL'))
    op.drop_index(op.f('ix_sales_run_id'), table_name='sales')
    op.drop_index(op.f('ix_sales_nft_id'), table_name='sales')
    op.drop_table('sales')
    op.drop_index(op.f('ix_staking_payouts_transaction_id'), table_name='staking_payouts')
    op.drop_table('staking_payouts')
    op.drop_index('ix_plays_unaccrued_received_at', table_name='plays', postgresql_where=sa.text('run_id IS NULL'))
    op.drop_index(op.f('ix_plays_track_id'), table_name='plays')
    op.drop_index('ix_plays_counted_listener_day', table_name='plays', postgresql_where=sa.text('counted'))
    op.drop_table('plays')
    op.drop_index('ix_payouts_status', table_name='payouts')
    op.drop_index('ix_payouts_period_start', table_name='payouts')
    op.drop_index(op.f('ix_payouts_batch_key'), table_name='payouts')
    op.drop_index(op.f('ix_payouts_batch_id'), table_name='payouts')
    op.drop_table('payouts')
    op.drop_index('ix_ledger_entries_account_id_id', table_name='ledger_entries')
    op.drop_table('ledger_entries')
    op.drop_index(op.f('ix_ledger_transactions_run_id'), table_name='ledger_transactions')
    op.drop_table('ledger_transactions')
    op.drop_index(op.f('ix_ledger_accounts_user_id'), table_name='ledger_accounts')
    op.drop_table('ledger_accounts')
    op.drop_table('ledger_runs')
