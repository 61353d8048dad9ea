"""Operators' controls over running work: paused queues and job types, beat schedules' state, and their audit trail."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ColumnElement,
    Exists,
    Index,
    SQLColumnExpression,
    String,
    Text,
    and_,
    exists,
    or_,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, created_at

#: What a pause holds: every job of a queue (a pool), or every job of one type.
PAUSE_KINDS = ("queue", "type")
#: What the audit trail records a change of.
CONTROL_TARGETS = ("queue", "type", "schedule")
CONTROL_ACTIONS = ("pause", "resume", "disable", "enable", "run")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


class Pause(Base):
    """A paused queue or job type: while the row exists no job of it starts; its jobs wait in the outbox."""

    __tablename__ = "pauses"
    __table_args__ = (CheckConstraint(_one_of("kind", PAUSE_KINDS), name="known_kind"),)

    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    paused_by: Mapped[str] = mapped_column(String(100))
    paused_at: Mapped[dt.datetime] = created_at()
    reason: Mapped[str | None] = mapped_column(Text)


class ScheduleState(Base):
    """What an operator set for one beat entry, and what beat last did with it.

    Beat reads it every tick; a row appears the first time either side writes, so no row means
    enabled and never run (since the table came to be).
    """

    __tablename__ = "schedule_states"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    enabled: Mapped[bool] = mapped_column(default=True, server_default="true")
    changed_by: Mapped[str | None] = mapped_column(String(100))
    changed_at: Mapped[dt.datetime | None]
    run_requested_at: Mapped[dt.datetime | None] = mapped_column(comment="Run now: the first beat to see it runs it.")
    run_requested_by: Mapped[str | None] = mapped_column(String(100))
    timing: Mapped[str | None] = mapped_column(String(64), comment="The ROADIE_SCHEDULE_* that beat last ran it on.")
    last_run_at: Mapped[dt.datetime | None]
    last_outcome: Mapped[str | None] = mapped_column(String(16))
    last_detail: Mapped[str | None] = mapped_column(Text)


class ControlEvent(Base):
    """Audit trail of the controls: who paused, resumed, disabled, enabled or ran what, and when."""

    __tablename__ = "control_events"
    __table_args__ = (
        CheckConstraint(_one_of("target_kind", CONTROL_TARGETS), name="known_target"),
        CheckConstraint(_one_of("action", CONTROL_ACTIONS), name="known_action"),
        Index("ix_control_events_target", "target_kind", "target", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    target_kind: Mapped[str] = mapped_column(String(8))
    target: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(8))
    actor: Mapped[str] = mapped_column(String(100))
    detail: Mapped[dict[str, Any] | None]
    created_at: Mapped[dt.datetime] = created_at()


def holding(queue: SQLColumnExpression[str] | str, job_type: SQLColumnExpression[str] | str) -> ColumnElement[bool]:
    """The pauses that hold a job of this queue and type."""
    return or_(and_(Pause.kind == "queue", Pause.name == queue), and_(Pause.kind == "type", Pause.name == job_type))


def paused(queue: SQLColumnExpression[str], job_type: SQLColumnExpression[str]) -> Exists:
    """True where a pause holds a job of this queue and type (a handful of rows: a scan costs nothing)."""
    return exists().where(holding(queue, job_type))
