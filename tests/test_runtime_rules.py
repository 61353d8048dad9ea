"""The rules the runtime applies, as plain functions: schedules and the Celery settings it relies on.

Which failures are retried, and the backoff, are in tests/test_retrying.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery.schedules import crontab

from schedules.beat import parse_schedule


def test_schedules_are_intervals_or_crontabs() -> None:
    assert parse_schedule("every 15s") == timedelta(seconds=15)
    assert parse_schedule("every 5m") == timedelta(minutes=5)
    assert parse_schedule("0 0 * * *") == crontab(minute="0", hour="0")
    with pytest.raises(ValueError, match="unpack"):
        parse_schedule("0 0 *")


def test_celery_refuses_anything_but_json() -> None:
    from workers.app import app

    assert app.conf.accept_content == ["json"]
    assert app.conf.task_serializer == "json"
    assert app.conf.task_acks_late
    assert app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1
