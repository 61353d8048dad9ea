"""console sessions: a server-side record per admin console sign-in, so sign-out ends it at once

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 13:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('console_sessions',
    sa.Column('id_hash', sa.String(length=64), nullable=False, comment="SHA-256 (hex) of the cookie's id."),
    sa.Column('client_id', sa.UUID(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['api_clients.id'], name=op.f('fk_console_sessions_client_id_api_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id_hash', name=op.f('pk_console_sessions'))
    )
    op.create_index(op.f('ix_console_sessions_client_id'), 'console_sessions', ['client_id'], unique=False)
    op.create_index(op.f('ix_console_sessions_expires_at'), 'console_sessions', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_console_sessions_expires_at'), table_name='console_sessions')
    op.drop_index(op.f('ix_console_sessions_client_id'), table_name='console_sessions')
    op.drop_table('console_sessions')
