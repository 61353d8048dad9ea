"""Beat that never pays twice: two real beat processes at once, a SIGKILLed worker, an outage caught up."""

from __future__ import annotations

import datetime as dt
import itertools
import time
import uuid

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import text

from roadie.cli import main
from roadie.db import transaction
from roadie.jobs.outbox import reap_lost
from roadie.ledger import money
from roadie.ledger.books import fund_treasury
from roadie.ledger.plays import record_plays
from roadie.ledger.staking import open_position
from roadie.processes import ProcessGroup
from roadie.settings import get_settings
from tests.conftest import Processes
from tests.fixtures.ledger import balance, earned, make_track, make_user
from tests.helpers import wait_for_job
from tests.test_durability import wait_until

pytestmark = pytest.mark.usefixtures("books")


def hours_ago(hours: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)


def runs(kind: str) -> list[tuple[dt.datetime, dt.datetime]]:
    with transaction() as session:
        return [
            (start, end)
            for start, end in session.execute(
                text("SELECT period_start, period_end FROM ledger_runs WHERE kind = :k ORDER BY period_start"),
                {"k": kind},
            )
        ]


def closed_periods(since: dt.datetime, length: int) -> int:
    now = int(time.time())
    return now // length - int(since.timestamp()) // length


def listened(hours: list[float]) -> tuple[uuid.UUID, uuid.UUID]:
    """An artist and a listener who played the artist's track ``hours`` ago, each play received when played."""
    settings = get_settings()
    with transaction() as session:
        fund_treasury(session, 10**18, "seed", hours_ago(max(hours) + 1))
        artist, listener = make_user(session), make_user(session)
        track = make_track(session, artist)
        for hour in hours:
            started = hours_ago(hour)
            played = {"event_id": uuid.uuid4().hex, "listener_id": str(listener), "track_id": str(track),
                      "started_at": started.isoformat(), "ms_listened": 60_000, "client": "test"}  # fmt: skip
            record_plays(session, [played], None, started, settings)
    return artist, listener


def test_two_beats_at_once_pay_every_period_once_and_catch_up_what_was_missed(
    api_url: str, own_workers: Processes, beats: list[ProcessGroup]
) -> None:
    settings = get_settings()
    artist, listener = listened([3, 2.5, 2])  # received during an outage of the beat: three hours back
    with transaction() as session:
        position = open_position(session, listener, "MINT", 10**15, 800, "apr", 0, hours_ago(50), settings).id
    own_workers.worker(queues="default,ledger", concurrency=2)

    for beat in beats:
        beat.start()
    expected_rewards = closed_periods(hours_ago(3), settings.ledger_reward_period_s)
    expected_staking = closed_periods(hours_ago(50), settings.ledger_staking_period_s)
    wait_until(
        lambda: len(runs("rewards")) >= expected_rewards and len(runs("staking")) >= expected_staking, timeout=90
    )
    time.sleep(3)  # both beats keep firing: nothing more happens
    for beat in beats:
        beat.stop()

    assert all("ledger.beat_rewards" in beat.log() for beat in beats), "both beats fired"
    rewards, staking = runs("rewards"), runs("staking")
    assert len(rewards) == expected_rewards
    assert len(staking) == expected_staking
    assert all(end == nxt for (_, end), (nxt, _) in itertools.pairwise(rewards))  # in order, no gaps
    with transaction() as session:
        assert earned(session, "rewards", listener) == 3 * settings.ledger_listener_rate
        assert earned(session, "rewards", artist) == 3 * settings.ledger_artist_rate
        paid_until = staking[-1][1]
        opened = session.execute(
            text("SELECT started_at FROM staking_positions WHERE id = :p"), {"p": position}
        ).scalar_one()
        seconds = int((paid_until - opened).total_seconds())
        assert earned(session, "staking", listener) == 10**15 * 800 * seconds // money.APR_SCALE
        payouts = session.execute(text("SELECT account_id, period_start, count(*) FROM payouts GROUP BY 1, 2")).all()
        assert all(count == 1 for _, _, count in payouts)
        assert balance(session, "rewards", artist) < settings.ledger_min_payout  # the rest was paid out, once


def test_a_worker_killed_in_the_middle_of_a_catch_up_loses_nothing_and_pays_nothing_twice(
    api_url: str, own_workers: Processes, make_client: object
) -> None:
    settings = get_settings()
    _, listener = listened(list(range(150, 0, -1)))  # one play an hour for 150 hours
    client = make_client("jobs:write", "jobs:read", "jobs:rehearse")  # type: ignore[operator]
    assert isinstance(client, httpx.Client)
    doomed = own_workers.worker(queues="ledger")
    job = client.post("/v1/jobs", json={"type": "ledger.catch_up", "payload": {"kind": "rewards"}}).json()
    wait_until(lambda: len(runs("rewards")) >= 20, timeout=60)

    doomed.kill()  # mid-catch-up: the period in flight rolls back
    done_before = len(runs("rewards"))
    time.sleep(3.5)  # > ROADIE_HEARTBEAT_TIMEOUT_S: the job's beat has stopped
    assert reap_lost() == 1  # what beat's reaper does every ROADIE_SCHEDULE_REAP_LOST_JOBS
    own_workers.worker(queues="ledger")
    finished = wait_for_job(client, job["id"], {"succeeded", "failed"}, timeout=120)

    assert finished["status"] == "succeeded", finished
    rewards = runs("rewards")
    assert len(rewards) == closed_periods(hours_ago(150), settings.ledger_reward_period_s)
    assert len(rewards) > done_before
    with transaction() as session:
        marked = session.execute(text("SELECT count(*) FROM plays WHERE run_id IS NOT NULL")).scalar_one()
        counted = session.execute(text("SELECT count(*) FROM plays WHERE counted")).scalar_one()
        assert marked == 150
        assert earned(session, "rewards", listener) == counted * settings.ledger_listener_rate


def test_roadie_ledger_check_reports_sound_books_and_fund_records_a_deposit_once() -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["ledger", "fund", "--amount", "1000", "--reference", "deposit-1"])
    again = runner.invoke(main, ["ledger", "fund", "--amount", "1000", "--reference", "deposit-1"])
    checked = runner.invoke(main, ["ledger", "check"])

    assert first.exit_code == again.exit_code == checked.exit_code == 0
    assert "already recorded" in again.output
    assert '"ok": true' in checked.output
    with transaction() as session:
        assert balance(session, "treasury") == 1000
        session.execute(text("ALTER TABLE ledger_accounts DISABLE TRIGGER ALL"))
        session.execute(text("UPDATE ledger_accounts SET balance = balance + 1 WHERE kind = 'treasury'"))
        session.execute(text("ALTER TABLE ledger_accounts ENABLE TRIGGER ALL"))
    broken = runner.invoke(main, ["ledger", "check"])
    with transaction() as session:
        session.execute(text("UPDATE ledger_accounts SET balance = balance - 1 WHERE kind = 'treasury'"))
    assert broken.exit_code == 1
    assert "balance_is_sum_of_entries" in broken.output
