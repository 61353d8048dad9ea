"""The beat schedule. Each entry's timing is the setting ``ROADIE_SCHEDULE_<NAME>``.

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
from datetime import timedelta
from typing import Any

from celery.beat import PersistentScheduler, ScheduleEntry
from celery.schedules import crontab

from roadie import logs
from roadie.jobs import outbox
from roadie.settings import Settings

log = logging.getLogger(__name__)

#: schedule name -> housekeeping function that beat calls itself; the timing is the setting ``schedule_<name>``.
HOUSEKEEPING: dict[str, Callable[[], int]] = {
    "sweep_outbox": outbox.republish_stale,
    "reap_lost_jobs": outbox.reap_lost,
    "purge_idempotency_keys": outbox.purge_expired_idempotency_keys,
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
}

#: Delivery options of entries that do not go to ``default`` or must not pile up behind a busy consumer.
SCHEDULE_OPTIONS: dict[str, dict[str, Any]] = {
    "indexer_tick": {"queue": "indexer", "expires": 30},
    # Where the scratch folders are; behind a backlog of transcodes the next one will do.
    "sweep_scratch": {"queue": "media", "expires": 300},
}


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
    """Celery's file-backed scheduler, which runs the housekeeping entries itself instead of sending them."""

    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        chore = HOUSEKEEPING.get(entry.name)
        if chore is None:
            super().apply_entry(entry, producer=producer)
            return
        tokens = logs.bind(request_id=logs.new_request_id(), task=entry.task)
        started = time.monotonic()
        try:
            count = chore()
        except Exception:  # the database may be away: the next period tries again, beat keeps sending
            log.exception("housekeeping.failed")
        else:
            log.debug(
                "housekeeping.done",
                extra={"count": count, "duration_ms": round((time.monotonic() - started) * 1000, 2)},
            )
        finally:
            logs.unbind(tokens)
