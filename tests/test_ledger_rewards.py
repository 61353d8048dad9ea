"""Listening rewards: which plays count, the daily caps, the period budget, and paying each period once."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from roadie.db import transaction
from roadie.jobs.errors import PermanentError
from roadie.ledger import money
from roadie.ledger.books import fund_treasury
from roadie.ledger.periods import catch_up
from roadie.ledger.plays import record_plays
from roadie.ledger.rewards import CLAIMS_TABLE, allocate
from tests.fixtures.ledger import at, balance, earned, make_track, make_user, rules

pytestmark = pytest.mark.usefixtures("books")


def play(listener: uuid.UUID, track: uuid.UUID, started: str, ms: int, event: str | None = None) -> dict[str, Any]:
    return {
        "event_id": event or uuid.uuid4().hex,
        "listener_id": str(listener),
        "track_id": str(track),
        "started_at": at(started).isoformat(),
        "ms_listened": ms,
        "client": "test",
    }


def store(events: list[dict[str, Any]], now: str) -> None:
    with transaction() as session:
        receipt = record_plays(session, events, None, at(now), rules())
    assert receipt.rejected == []


@pytest.fixture
def world() -> dict[str, uuid.UUID]:
    with transaction() as session:
        fund_treasury(session, 10**12, "seed", at("2026-01-01T00:00"))
        artist = make_user(session)
        return {
            "artist": artist,
            "listener": make_user(session),
            "other": make_user(session),
            "song": make_track(session, artist, 180_000),
            "jingle": make_track(session, artist, 40_000),
            "song2": make_track(session, artist, 200_000),
        }


def test_a_play_counts_from_30_seconds_or_half_of_a_short_track(world: dict[str, uuid.UUID]) -> None:
    w = world
    store(
        [
            play(w["listener"], w["song"], "2026-03-01T10:00", 29_999),  # too short
            play(w["listener"], w["song"], "2026-03-01T10:05", 30_000),  # counts
            play(w["listener"], w["jingle"], "2026-03-01T10:10", 19_999),  # under half of 40 s
            play(w["listener"], w["jingle"], "2026-03-01T10:11", 20_000),  # half of 40 s counts
        ],
        now="2026-03-01T10:30",
    )

    [run] = catch_up("rewards", at("2026-03-01T11:00"), rules())

    assert run["plays"] == 4
    assert run["counted"] == 2
    with transaction() as session:
        assert earned(session, "rewards", w["listener"]) == 2 * 100
        assert earned(session, "rewards", w["artist"]) == 2 * 10
        assert balance(session, "treasury") == 10**12 - 220


def test_daily_caps_per_track_and_per_listener_hold_across_periods_and_reset_at_midnight_utc(
    world: dict[str, uuid.UUID],
) -> None:
    w = world
    # 4 plays of one song (cap 3 a day per track), then 3 of another: 3 + 3 = 6 > 5 a day per listener.
    store([play(w["listener"], w["song"], f"2026-03-01T10:0{i}", 60_000) for i in range(4)], "2026-03-01T10:30")
    catch_up("rewards", at("2026-03-01T11:00"), rules())
    store([play(w["listener"], w["song2"], f"2026-03-01T11:0{i}", 60_000) for i in range(3)], "2026-03-01T11:30")
    store([play(w["listener"], w["song"], "2026-03-02T00:01", 60_000)], "2026-03-02T00:30")  # a new UTC day

    runs = catch_up("rewards", at("2026-03-02T01:00"), rules())

    assert [r["counted"] for r in runs] == [2] + [0] * 12 + [1]  # 11:00 period, 12 empty hours, 00:00 period
    with transaction() as session:
        assert earned(session, "rewards", w["listener"]) == (3 + 2 + 1) * 100
        outcome = session.execute(text("SELECT counted, count(*) FROM plays GROUP BY 1 ORDER BY 1")).all()
    assert outcome == [(False, 2), (True, 6)]


def test_claims_over_the_budget_are_scaled_with_caps_and_what_capped_users_cannot_take_goes_to_others(
    world: dict[str, uuid.UUID],
) -> None:
    w = world
    plays_ = [play(w["listener"], w["song"], f"2026-03-01T10:{i:02}", 60_000) for i in range(3)]
    plays_ += [play(w["other"], w["song2"], f"2026-03-01T10:{i:02}", 60_000) for i in range(1)]
    store(plays_, "2026-03-01T10:30")
    # Claims: listener 300, other 100, artist 40 = 440 against a budget of 200 and a cap of 90. The listener
    # is capped at 90; the other 110 go 100:40 (78.57 and 31.43), the leftover unit to the larger remainder.
    [run] = catch_up("rewards", at("2026-03-01T11:00"), rules(ledger_reward_budget=200, ledger_reward_user_cap=90))

    assert run["claimed"] == 440
    assert run["accrued"] == 200
    with transaction() as session:
        paid = {k: earned(session, "rewards", w[k]) for k in ("listener", "other", "artist")}
    assert paid == {"listener": 90, "other": 79, "artist": 31}
    expected = money.capped_pro_rata(200, {w["listener"]: 300, w["other"]: 100, w["artist"]: 40}, 90)
    assert paid == {k: expected[w[k]] for k in paid}


def test_a_late_play_is_counted_by_the_next_period_and_no_period_is_paid_twice(world: dict[str, uuid.UUID]) -> None:
    w = world
    store([play(w["listener"], w["song"], "2026-03-01T10:10", 60_000)], "2026-03-01T10:20")
    assert len(catch_up("rewards", at("2026-03-01T11:00"), rules())) == 1
    assert catch_up("rewards", at("2026-03-01T11:00"), rules()) == []  # the same period again: nothing
    store([play(w["listener"], w["song"], "2026-03-01T10:40", 60_000)], "2026-03-01T11:05")  # started in 10:00

    [late] = catch_up("rewards", at("2026-03-01T12:00"), rules())

    assert late["counted"] == 1
    with transaction() as session:
        assert earned(session, "rewards", w["listener"]) == 200
        keys = session.scalars(text("SELECT key FROM ledger_transactions WHERE kind = 'rewards' ORDER BY key")).all()
    assert keys == ["rewards:2026-03-01T10:00Z", "rewards:2026-03-01T11:00Z"]


def test_an_underfunded_treasury_fails_the_period_with_a_code_and_leaves_nothing_half_written() -> None:
    with transaction() as session:
        artist, listener = make_user(session), make_user(session)
        track = make_track(session, artist)
        fund_treasury(session, 50, "small", at("2026-01-01T00:00"))
    store([play(listener, track, "2026-03-01T10:10", 60_000)], "2026-03-01T10:20")

    with pytest.raises(PermanentError) as failure:
        catch_up("rewards", at("2026-03-01T11:00"), rules())

    assert failure.value.code == "insufficient_funds"
    with transaction() as session:
        assert session.execute(text("SELECT count(*) FROM ledger_runs")).scalar_one() == 0
        assert session.execute(text("SELECT count(*) FROM plays WHERE run_id IS NOT NULL")).scalar_one() == 0
        assert balance(session, "treasury") == 50


claims_strategy = st.dictionaries(
    st.integers(min_value=1, max_value=10**6).map(lambda n: uuid.UUID(int=n)),
    st.integers(min_value=0, max_value=10**15),
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claims_strategy, st.integers(min_value=0, max_value=10**16), st.integers(min_value=1, max_value=10**15))
def test_the_sql_allocation_is_the_reference_rule(claims: dict[uuid.UUID, int], budget: int, cap: int) -> None:
    with transaction() as session:
        session.execute(text(CLAIMS_TABLE))
        if claims:
            session.execute(
                text(
                    "INSERT INTO reward_claims SELECT u, 0, 0, c"
                    " FROM unnest(CAST(:u AS uuid[]), CAST(:c AS numeric[])) AS x(u, c)"
                ),
                {"u": list(claims), "c": list(claims.values())},
            )
        allocate(session, budget, cap)
        got: dict[uuid.UUID, int] = dict(session.execute(text("SELECT user_id, amount FROM reward_allocations")).all())
        session.rollback()
    expected = money.capped_pro_rata(budget, claims, cap)
    assert {user: int(amount) for user, amount in got.items() if amount} == {u: a for u, a in expected.items() if a}


def test_periods_tile_utc_time_from_the_epoch() -> None:
    from roadie.ledger.books import period_floor

    assert period_floor(at("2024-02-29T23:59:59"), 86_400) == at("2024-02-29T00:00")
    assert period_floor(at("2026-03-01T10:59:59"), 3600) == at("2026-03-01T10:00")
    assert period_floor(at("2026-12-31T23:00") + dt.timedelta(hours=1), 86_400) == at("2027-01-01T00:00")
