"""queue controls: paused queues and job types (the relay holds their outbox rows), beat schedules' state, audit

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-03 20:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pauses",
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("paused_by", sa.String(length=100), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.CheckConstraint("kind IN ('queue', 'type')", name=op.f("ck_pauses_known_kind")),
        sa.PrimaryKeyConstraint("kind", "name", name=op.f("pk_pauses")),
    )
    op.create_table(
        "schedule_states",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("changed_by", sa.String(length=100), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "run_requested_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Run now: the first beat to see it runs it.",
        ),
        sa.Column("run_requested_by", sa.String(length=100), nullable=True),
        sa.Column(
            "timing", sa.String(length=64), nullable=True, comment="The ROADIE_SCHEDULE_* that beat last ran it on."
        ),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_outcome", sa.String(length=16), nullable=True),
        sa.Column("last_detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_schedule_states")),
    )
    op.create_table(
        "control_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("target_kind", sa.String(length=8), nullable=False),
        sa.Column("target", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("target_kind IN ('queue', 'type', 'schedule')", name=op.f("ck_control_events_known_target")),
        sa.CheckConstraint(
            "action IN ('pause', 'resume', 'disable', 'enable', 'run')", name=op.f("ck_control_events_known_action")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_control_events")),
    )
    op.create_index("ix_control_events_target", "control_events", ["target_kind", "target", "id"], unique=False)
    op.add_column("outbox", sa.Column("held", sa.Boolean(), server_default="false", nullable=False))
    # The relay's due rows are the unheld ones: held rows stay out of its index scan however many pile up.
    op.drop_index("ix_outbox_available_at", table_name="outbox")
    op.create_index(
        "ix_outbox_available_at", "outbox", ["available_at"], unique=False, postgresql_where=sa.text("NOT held")
    )
    op.create_index("ix_outbox_held", "outbox", ["job_id"], unique=False, postgresql_where=sa.text("held"))


def downgrade() -> None:
    op.drop_index("ix_outbox_held", table_name="outbox", postgresql_where=sa.text("held"))
    op.drop_index("ix_outbox_available_at", table_name="outbox", postgresql_where=sa.text("NOT held"))
    op.create_index("ix_outbox_available_at", "outbox", ["available_at"], unique=False)
    op.drop_column("outbox", "held")
    op.drop_index("ix_control_events_target", table_name="control_events")
    op.drop_table("control_events")
    op.drop_table("schedule_states")
    op.drop_table("pauses")
