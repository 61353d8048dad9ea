"""The rules the runtime applies, as plain functions: retry taxonomy, backoff, schedules."""

from __future__ import annotations

import random
from datetime import timedelta

import httpx
import pytest
from celery.exceptions import SoftTimeLimitExceeded
from celery.schedules import crontab
from sqlalchemy.exc import OperationalError

from roadie.jobs.errors import PermanentError, TransientError
from roadie.jobs.runtime import backoff_seconds, is_transient
from schedules.beat import parse_schedule


def http_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "http://127.0.0.1/")
    return httpx.HTTPStatusError("boom", request=request, response=httpx.Response(status, request=request))


@pytest.mark.parametrize(
    "error",
    [TransientError("x"), TimeoutError(), ConnectionResetError(), SoftTimeLimitExceeded(), http_error(503),
     http_error(429), httpx.ConnectTimeout("x"), OperationalError("SELECT", {}, Exception("lock timeout"))],
)  # fmt: skip
def test_transient_errors_are_retried(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize("error", [PermanentError("x"), ValueError(), KeyError(), http_error(404), http_error(422)])
def test_permanent_errors_fail_at_once(error: BaseException) -> None:
    assert not is_transient(error)


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (8, 60.0), (30, 60.0)]:
        delays = [backoff_seconds(attempt, base=1.0, cap=60.0, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not fixed


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
