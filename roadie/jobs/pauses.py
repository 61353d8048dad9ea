"""Paused queues and job types: while paused, no job of theirs starts; they wait in the ledger, not on the broker.

A pause is a row in ``pauses``, so it survives restarts of every process and a flushed broker. Two places honour it:

- the relay holds (``outbox.held``) the outbox rows of paused jobs instead of publishing them;
- a worker handed a paused job (published before the pause) gives it back to the outbox, held, without running it.

Running jobs finish; intake keeps accepting; resuming releases the held rows to the relay. A row held in a race
with a resume is released by the ``release_held`` housekeeping within its period, so nothing stays held unpaused.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import ColumnElement, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from models.controls import ControlEvent, Pause, paused
from models.platform import Job, JobStatus, OutboxMessage
from roadie.db import transaction
from roadie.jobs.intake import IntakeError
from roadie.jobs.outbox import NOTIFY_CHANNEL
from roadie.jobs.types import QUEUES, job_types

log = logging.getLogger(__name__)

Kind = Literal["queue", "type"]


@dataclass(frozen=True)
class PauseState:
    """A queue or job type, whether it is paused (by whom, when, why), and its jobs held or running now."""

    kind: Kind
    name: str
    paused: bool
    paused_by: str | None
    paused_at: dt.datetime | None
    reason: str | None
    held: int
    running: int


def _check_known(kind: Kind, name: str) -> None:
    known = QUEUES if kind == "queue" else tuple(job_types())
    if name not in known:
        noun = "queue" if kind == "queue" else "job type"
        raise IntakeError(404, "not_found", f"no {noun} {name!r}; known: {', '.join(sorted(known))}")


async def pause(session: AsyncSession, kind: Kind, name: str, actor: str, reason: str | None = None) -> PauseState:
    """Pause a queue or job type (pausing a paused one keeps the first pause); audited."""
    _check_known(kind, name)
    added = await session.execute(
        insert(Pause)
        .values(kind=kind, name=name, paused_by=actor, reason=reason)
        .on_conflict_do_nothing()
        .returning(Pause.name)
    )
    if added.first() is not None:
        session.add(ControlEvent(target_kind=kind, target=name, action="pause", actor=actor, detail={"reason": reason}))
        log.warning("controls.paused", extra={"kind": kind, "target": name, "actor": actor})
    return await state(session, kind, name)


async def resume(session: AsyncSession, kind: Kind, name: str, actor: str) -> PauseState:
    """Lift the pause and release its held jobs to the relay (those no other pause holds); audited."""
    _check_known(kind, name)
    # Deleting first waits for a worker that is giving a job back under this pause (it holds the row FOR SHARE),
    # so the release below sees the row it added.
    removed = await session.execute(delete(Pause).where(Pause.kind == kind, Pause.name == name).returning(Pause.name))
    if removed.first() is not None:
        which = Job.queue == name if kind == "queue" else Job.type == name
        count = cast("CursorResult[Any]", await session.execute(_release_statement(which))).rowcount
        detail = {"released": count}
        session.add(ControlEvent(target_kind=kind, target=name, action="resume", actor=actor, detail=detail))
        await session.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
        log.warning("controls.resumed", extra={"kind": kind, "target": name, "actor": actor, "released": count})
    return await state(session, kind, name)


def _release_statement(which: ColumnElement[bool]) -> Any:
    """Un-hold the held outbox rows of the jobs ``which`` selects that no pause holds any more."""
    return (
        update(OutboxMessage)
        .where(
            OutboxMessage.held.is_(True),
            OutboxMessage.job_id.in_(select(Job.id).where(which, ~paused(Job.queue, Job.type))),
        )
        .values(held=False)
    )


def release_held() -> int:
    """Housekeeping: release held rows whose pause is gone (one held in a race with a resume); returns how many."""
    with transaction() as session:
        released = cast("CursorResult[Any]", session.execute(_release_statement(Job.id.is_not(None)))).rowcount
        if released:
            session.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
            log.warning("controls.released_held", extra={"count": released})
        return released


async def state(session: AsyncSession, kind: Kind, name: str) -> PauseState:
    """One queue's or job type's pause state now."""
    (found,) = await states(session, [(kind, name)])
    return found


async def states(session: AsyncSession, targets: list[tuple[Kind, str]] | None = None) -> list[PauseState]:
    """The pause state of ``targets``, or of every queue and every paused job type."""
    pauses = {(p.kind, p.name): p for p in (await session.scalars(select(Pause))).all()}
    if targets is None:
        paused_types = sorted(name for kind, name in pauses if kind == "type")
        targets = [*(("queue", queue) for queue in QUEUES), *(("type", name) for name in paused_types)]
    held: dict[tuple[str, str], int] = {}
    running: dict[tuple[str, str], int] = {}
    for kind, column in (("queue", Job.queue), ("type", Job.type)):
        names = [name for k, name in targets if k == kind]
        if not names:
            continue
        held_rows = await session.execute(
            select(column, func.count())
            .select_from(OutboxMessage)
            .join(Job, Job.id == OutboxMessage.job_id)
            .where(OutboxMessage.held.is_(True), column.in_(names))
            .group_by(column)
        )
        held.update(((kind, name), count) for name, count in held_rows)
        running_rows = await session.execute(
            select(column, func.count()).where(Job.status == JobStatus.RUNNING, column.in_(names)).group_by(column)
        )
        running.update(((kind, name), count) for name, count in running_rows)
    result = []
    for kind, name in targets:
        found = pauses.get((kind, name))
        result.append(
            PauseState(
                kind=kind,
                name=name,
                paused=found is not None,
                paused_by=found.paused_by if found else None,
                paused_at=found.paused_at if found else None,
                reason=found.reason if found else None,
                held=held.get((kind, name), 0),
                running=running.get((kind, name), 0),
            )
        )
    return result
