"""The console's controls: queues and job types to pause and resume, beat's schedules to run, disable and enable.

Each form goes through the same service functions as the API and the CLI (:mod:`roadie.jobs.pauses`,
:mod:`schedules.state`), so every change is audited with the operator's client name; the pages list the
latest audit entries beside the controls.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData

from models.controls import ControlEvent
from models.platform import ApiClient
from roadie.jobs import pauses
from roadie.jobs.intake import IntakeError
from roadie.jobs.types import job_types
from schedules import state

AUDIT_ROWS = 20


async def _audit(session: AsyncSession, kinds: tuple[str, ...]) -> list[ControlEvent]:
    return list(
        (
            await session.scalars(
                select(ControlEvent)
                .where(ControlEvent.target_kind.in_(kinds))
                .order_by(ControlEvent.id.desc())
                .limit(AUDIT_ROWS)
            )
        ).all()
    )


async def queues_context(session: AsyncSession) -> dict[str, Any]:
    """Every queue and paused job type, the job types one may pause, and the latest pauses and resumes."""
    found = await pauses.states(session)
    paused_types = {s.name for s in found if s.kind == "type"}
    return {
        "states": found,
        "pausable_types": sorted(name for name in job_types() if name not in paused_types),
        "audit": await _audit(session, ("queue", "type")),
    }


async def schedules_context(session: AsyncSession) -> dict[str, Any]:
    """Beat's entries and the latest changes to them."""
    return {"schedules": await state.list_schedules(session), "audit": await _audit(session, ("schedule",))}


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    if not isinstance(value, str) or not value.strip():
        raise IntakeError(422, "validation_error", f"the form lacks {name}")
    return value.strip()


async def pause_or_resume(
    session: AsyncSession, operator: ApiClient, form: FormData, action: Literal["pause", "resume"]
) -> str:
    """Pause or resume the form's queue or job type; returns the notice to show."""
    kind: pauses.Kind = "type" if form.get("kind") == "type" else "queue"
    name = _field(form, "name")
    noun = "Job type" if kind == "type" else "Queue"
    if action == "resume":
        await pauses.resume(session, kind, name, operator.name)
        return f"{noun} {name} resumed by {operator.name}: its held jobs go to the workers."
    reason = form.get("reason")
    reason = reason.strip()[:500] or None if isinstance(reason, str) else None
    paused = await pauses.pause(session, kind, name, operator.name, reason)
    return f"{noun} {name} paused by {paused.paused_by}: nothing new of it starts; running jobs finish."


async def drive_schedule(session: AsyncSession, operator: ApiClient, form: FormData, action: state.Action) -> str:
    """Run, disable or enable the form's schedule; returns the notice to show."""
    view = await state.change(session, _field(form, "name"), action, operator.name)
    done = {"run": "will run within a few seconds", "disable": "is disabled", "enable": "is enabled"}[action]
    return f"Schedule {view.name} {done} ({operator.name})."
