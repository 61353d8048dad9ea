"""Beat's entries as operators see and drive them: list, disable, enable, run now (``schedule_states``).

Beat obeys the table within its loop interval (see :class:`schedules.beat.Scheduler`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from celery.schedules import crontab, schedule
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.controls import ControlEvent, ScheduleState
from roadie.jobs.intake import IntakeError
from roadie.settings import get_settings
from schedules.beat import beat_schedule, parse_schedule, upsert_state


@dataclass(frozen=True)
class ScheduleView:
    """One beat entry as an operator sees it."""

    name: str
    task: str
    schedule: str
    enabled: bool
    changed_by: str | None
    changed_at: dt.datetime | None
    run_requested_at: dt.datetime | None
    last_run_at: dt.datetime | None
    last_outcome: str | None
    last_detail: str | None
    next_run_at: dt.datetime | None


def _next_run(text: str, last_run_at: dt.datetime | None, now: dt.datetime) -> dt.datetime:
    """When beat next runs the entry: its period after the last run (now if overdue or never run at that pace)."""
    every = beat_schedule_entry(text)
    if last_run_at is None and not isinstance(every, crontab):
        return now
    remaining: dt.timedelta = every.remaining_estimate(last_run_at or now)
    due: dt.datetime = every.now() + remaining  # the estimate is from Celery's clock
    return max(now, due)


def beat_schedule_entry(text: str) -> schedule:
    """The Celery schedule of a ``ROADIE_SCHEDULE_*`` setting's text."""
    parsed = parse_schedule(text)
    return parsed if isinstance(parsed, crontab) else schedule(parsed)


async def list_schedules(session: AsyncSession) -> list[ScheduleView]:
    """Every beat entry, in the order beat declares them, with its state."""
    settings = get_settings()
    rows = {row.name: row for row in (await session.scalars(select(ScheduleState))).all()}
    now = await session.scalar(select(func.now()))
    assert now is not None
    views = []
    for name, entry in beat_schedule(settings).items():
        row = rows.get(name)
        text = (row.timing if row else None) or getattr(settings, f"schedule_{name}")
        enabled = row is None or row.enabled
        last_run_at = row.last_run_at if row else None
        views.append(
            ScheduleView(
                name=name,
                task=entry["task"],
                schedule=text,
                enabled=enabled,
                changed_by=row.changed_by if row else None,
                changed_at=row.changed_at if row else None,
                run_requested_at=row.run_requested_at if row else None,
                last_run_at=last_run_at,
                last_outcome=row.last_outcome if row else None,
                last_detail=row.last_detail if row else None,
                next_run_at=_next_run(text, last_run_at, now) if enabled else None,
            )
        )
    return views


Action = Literal["disable", "enable", "run"]


async def change(session: AsyncSession, name: str, action: Action, actor: str) -> ScheduleView:
    """Disable, enable or ask beat to run an entry now; audited. Beat obeys within its loop interval."""
    if name not in beat_schedule(get_settings()):
        raise IntakeError(404, "not_found", f"no schedule {name!r}; `roadie schedules list` shows them")
    values: dict[str, Any]
    if action == "run":
        values = {"run_requested_at": func.now(), "run_requested_by": actor}
    else:
        values = {"enabled": action == "enable", "changed_by": actor, "changed_at": func.now()}
    await session.execute(upsert_state(name, values))
    session.add(ControlEvent(target_kind="schedule", target=name, action=action, actor=actor))
    await session.flush()
    return next(view for view in await list_schedules(session) if view.name == name)
