"""The beat schedule. Each entry's timing is the setting ``ROADIE_SCHEDULE_<NAME>``.

Housekeeping runs every few seconds. The money schedules (rewards hourly, royalties daily, staking daily at
00:00 UTC) only enqueue a job; the job is keyed by its periods, so a second beat pays nothing twice.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.schedules import crontab

from roadie.settings import Settings

#: schedule name -> task; the timing is the setting ``schedule_<name>``.
SCHEDULED_TASKS: dict[str, str] = {
    "sweep_outbox": "platform.sweep_outbox",
    "reap_lost_jobs": "platform.reap_lost_jobs",
    "purge_idempotency_keys": "platform.purge_idempotency_keys",
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
    return {
        name: {
            "task": task,
            "schedule": parse_schedule(getattr(settings, f"schedule_{name}")),
            "options": {"queue": "default", "expires": 60} | SCHEDULE_OPTIONS.get(name, {}),
        }
        for name, task in SCHEDULED_TASKS.items()
    }
