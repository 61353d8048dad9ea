"""The beat schedule. Each entry's timing is the setting ``ROADIE_SCHEDULE_<NAME>``; operators disable, enable or
run an entry now through ``schedule_states`` (see :mod:`schedules.state`), which beat reads every tick.

Housekeeping (the outbox sweep, the reaper, the Idempotency-Key purge) runs every few seconds inside
beat's own process (:class:`Scheduler`), never through a queue: a backlog of jobs on ``default`` cannot
delay the reaper that rescues them. Two beats would both run it, which is harmless: it locks its rows
with ``SKIP LOCKED`` and is idempotent. The money schedules (rewards hourly, royalties daily, staking daily at
00:00 UTC) only enqueue a job; the job is keyed by its periods, so a second beat pays nothing twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, cast

from celery.beat import PersistentScheduler, ScheduleEntry
from celery.schedules import crontab, schedstate
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import Insert, insert

from models.controls import ScheduleState
from roadie import logs
from roadie.db import transaction
from roadie.jobs import outbox, pauses
from roadie.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: schedule name -> housekeeping function that beat calls itself; the timing is the setting ``schedule_<name>``.
HOUSEKEEPING: dict[str, Callable[[], int]] = {
    "sweep_outbox": outbox.republish_stale,
    "reap_lost_jobs": outbox.reap_lost,
    "purge_idempotency_keys": outbox.purge_expired_idempotency_keys,
    "release_held": pauses.release_held,
}

#: schedule name -> task that beat sends to a worker; the timing is the setting ``schedule_<name>``.
SCHEDULED_TASKS: dict[str, str] = {
    # Ledger (issue 5): each enqueues a job that runs every closed period not yet done, once per period.
    "ledger_rewards": "ledger.beat_rewards",
    "ledger_royalties": "ledger.beat_royalties",
    "ledger_staking": "ledger.beat_staking",
    "ledger_payout_status": "ledger.beat_payout_status",
    "ledger_check": "ledger.beat_check",
    "indexer_tick": "indexer.tick",
    "sweep_scratch": "media.sweep_scratch",
    "purge_finished_jobs": "platform.purge_finished_jobs",
}

#: Delivery options of entries that do not go to ``default`` or must not pile up behind a busy consumer.
SCHEDULE_OPTIONS: dict[str, dict[str, Any]] = {
    "indexer_tick": {"queue": "indexer", "expires": 30},
    # Where the scratch folders are; behind a backlog of transcodes the next one will do.
    "sweep_scratch": {"queue": "media", "expires": 300},
    # A run takes up to a minute on a backlog; on a busy default queue the next one carries on.
    "purge_finished_jobs": {"expires": 300},
}


Outcome = Literal["done", "sent", "failed"]


@dataclass(frozen=True)
class Controls:
    """What one beat tick obeys: the disabled entries, and the run-now requests it took."""

    disabled: frozenset[str]
    run_now: tuple[str, ...]


def take_controls() -> Controls:
    """The disabled entries, and the run-now requests this beat takes (no other beat gets them)."""
    with transaction() as session:
        disabled = session.scalars(select(ScheduleState.name).where(ScheduleState.enabled.is_(False))).all()
        taken = session.scalars(
            update(ScheduleState)
            .where(ScheduleState.run_requested_at.is_not(None))
            .values(run_requested_at=None, run_requested_by=None)
            .returning(ScheduleState.name)
        ).all()
    return Controls(frozenset(disabled), tuple(taken))


def upsert_state(name: str, values: dict[str, Any]) -> Insert:
    """Set ``values`` on an entry's state row, creating the row on first use."""
    return insert(ScheduleState).values(name=name, **values).on_conflict_do_update(index_elements=["name"], set_=values)


def record_run(name: str, outcome: Outcome, detail: str | None) -> None:
    """Stamp an entry's last run, how it went, and the timing beat runs it on (the API's settings may differ)."""
    timing = getattr(get_settings(), f"schedule_{name}")
    values = {"last_run_at": func.now(), "last_outcome": outcome, "last_detail": detail, "timing": timing}
    with transaction() as session:
        session.execute(upsert_state(name, values))


def parse_schedule(text: str) -> timedelta | crontab:
    """``every 15s`` / ``every 5m`` or a five-field crontab such as ``0 0 * * *``."""
    text = text.strip()
    if text.startswith("every "):
        amount, unit = text.removeprefix("every ")[:-1], text[-1]
        seconds = {"s": 1, "m": 60, "h": 3600}[unit]
        return timedelta(seconds=float(amount) * seconds)
    minute, hour, day_of_month, month_of_year, day_of_week = text.split()
    return crontab(minute, hour, day_of_week, day_of_month, month_of_year)


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every entry; housekeeping's are named ``housekeeping.<name>``: :class:`Scheduler` runs them, none is sent."""
    tasks = {name: f"housekeeping.{name}" for name in HOUSEKEEPING} | SCHEDULED_TASKS
    return {
        name: {
            "task": task,
            "schedule": parse_schedule(getattr(settings, f"schedule_{name}")),
            "options": {"queue": "default", "expires": 60} | SCHEDULE_OPTIONS.get(name, {}),
        }
        for name, task in tasks.items()
    }


class Scheduler(PersistentScheduler):  # type: ignore[misc]  # Celery's classes are untyped
    """Celery's file-backed scheduler, obeying ``schedule_states``, which runs the housekeeping entries itself.

    Every tick reads which entries an operator disabled and takes the run-now requests (each goes to one beat
    only). Until the table has been read once (the database is away at start), nothing is due: a disabled
    money entry must not run because beat restarted during an outage. Each run is stamped with its outcome.
    """

    #: Longest sleep between ticks: how soon a run-now request, a disable or an enable is obeyed.
    max_interval = 5
    _disabled: frozenset[str] | None = None

    def tick(self, *args: Any, **kwargs: Any) -> float:
        self._obey_controls()
        return cast("float", super().tick(*args, **kwargs))

    def _obey_controls(self) -> None:
        try:
            controls = take_controls()
        except Exception:  # the database may be away: keep what was last read
            log.exception("beat.controls_unavailable")
            return
        self._disabled = controls.disabled
        for name in controls.run_now:
            entry = self.schedule.get(name)
            if entry is not None:
                log.info("beat.run_now", extra={"schedule": name})
                self.apply_entry(entry, producer=self.producer)

    def is_due(self, entry: ScheduleEntry) -> schedstate:
        if self._disabled is None or entry.name in self._disabled:
            return schedstate(is_due=False, next=self.max_interval)
        return entry.is_due()

    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        chore = HOUSEKEEPING.get(entry.name)
        if chore is None:
            self._send(entry, producer)
            return
        tokens = logs.bind(request_id=logs.new_request_id(), task=entry.task)
        started = time.monotonic()
        try:
            count = chore()
        except Exception as exc:  # the database may be away: the next period tries again, beat keeps sending
            log.exception("housekeeping.failed")
            _record(entry.name, "failed", repr(exc))
        else:
            log.debug(
                "housekeeping.done",
                extra={"count": count, "duration_ms": round((time.monotonic() - started) * 1000, 2)},
            )
            _record(entry.name, "done", f"{count} rows")
        finally:
            logs.unbind(tokens)

    def _send(self, entry: ScheduleEntry, producer: Any) -> None:
        log.info("beat.sending", extra={"schedule": entry.name, "task": entry.task})
        try:
            self.apply_async(entry, producer=producer, advance=False)
        except Exception as exc:  # the broker may be away: the next period sends again
            log.exception("beat.send_failed", extra={"schedule": entry.name})
            _record(entry.name, "failed", repr(exc))
        else:
            _record(entry.name, "sent", f"{entry.task} to {entry.options.get('queue', 'default')}")


def _record(name: str, outcome: Outcome, detail: str) -> None:
    try:
        record_run(name, outcome, detail)
    except Exception:  # the run happened; only its stamp is lost
        log.warning("beat.record_failed", extra={"schedule": name}, exc_info=True)
