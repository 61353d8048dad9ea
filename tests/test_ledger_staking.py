"""Staking interest: exact integers with a carry, once per period, pro rata to an unstake, across the calendar."""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import pytest
from freezegun import freeze_time
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from models.music import StakingPosition
from roadie.db import transaction
from roadie.jobs.errors import PermanentError
from roadie.ledger import money
from roadie.ledger.books import fund_treasury
from roadie.ledger.periods import catch_up
from roadie.ledger.staking import open_position, unstake
from tests.fixtures.ledger import at, balance, earned, make_user, rules

pytestmark = pytest.mark.usefixtures("books")

PRINCIPAL = 1_234_567_891_234


@pytest.fixture
def staker() -> uuid.UUID:
    with transaction() as session:
        fund_treasury(session, 10**18, "seed", at("2020-01-01T00:00"))
        return make_user(session)


def stake(user: uuid.UUID, rate_bps: int = 700, rate_kind: str = "apr", lock_days: int = 0) -> uuid.UUID:
    with transaction() as session:
        position = open_position(
            session, user, "MINT", PRINCIPAL, rate_bps, rate_kind, lock_days * 86_400, dt.datetime.now(dt.UTC), rules()
        )
        return position.id


def payouts_of(position: uuid.UUID) -> list[tuple[dt.datetime, int, int]]:
    with transaction() as session:
        rows = session.execute(
            text(
                "SELECT period_start, amount, carry_after FROM staking_payouts WHERE position_id = :p"
                " ORDER BY period_start"
            ),
            {"p": position},
        ).all()
    return [(start, int(amount), int(carry)) for start, amount, carry in rows]


def test_a_year_of_daily_payouts_across_month_ends_a_leap_day_and_new_year_is_the_closed_form(
    staker: uuid.UUID,
) -> None:
    with freeze_time("2023-12-31T13:17:05Z") as clock:
        position = stake(staker)
        for _ in range(366):  # through 2024, a leap year: month ends, 29 February, 31 December
            clock.tick(dt.timedelta(days=1))
            catch_up("staking", settings=rules())
        with transaction() as session:
            result = unstake(session, position, dt.datetime.now(dt.UTC), rules())

    paid = payouts_of(position)
    assert len(paid) == 367  # the first partial day, 365 whole days, the partial day before the unstake
    assert paid[0][0] == at("2023-12-31T00:00")
    assert at("2024-02-29T00:00") in [start for start, _, _ in paid]
    assert [start for start, _, _ in paid][-2:] == [at("2024-12-30T00:00"), at("2024-12-31T00:00")]
    total, carry = sum(amount for _, amount, _ in paid), paid[-1][2]
    seconds = 366 * 86_400
    assert total * money.APR_SCALE + carry == PRINCIPAL * 700 * seconds  # exact, to the carry
    assert total == PRINCIPAL * 700 * seconds // money.APR_SCALE
    assert all(0 <= c < money.APR_SCALE for _, _, c in paid)
    assert result["interest"] == paid[-1][1]
    with transaction() as session:
        assert earned(session, "staking", staker) == total + PRINCIPAL
        assert balance(session, "stake", staker) == 0


def test_an_apy_position_compounds_to_its_yield_over_a_year(staker: uuid.UUID) -> None:
    with freeze_time("2025-01-01T00:00:00Z") as clock:
        position = stake(staker, rate_bps=800, rate_kind="apy")
        clock.tick(dt.timedelta(days=365))
        runs = catch_up("staking", settings=rules())

    assert len(runs) == 365  # an outage of a year: every day caught up, in order, each under its own key
    with transaction() as session:
        grown = session.get_one(StakingPosition, position).amount
        assert balance(session, "stake", staker) == grown
    exact = PRINCIPAL * (1 + Fraction(800, money.BPS))
    assert 0 <= exact - grown < 2  # each period floors; the carry keeps the fractions of a unit


def test_unstaking_mid_period_pays_pro_rata_and_an_early_unstake_returns_the_penalty_to_the_treasury(
    staker: uuid.UUID,
) -> None:
    with freeze_time("2026-02-27T06:00:00Z") as clock:
        position = stake(staker, rate_bps=1000, lock_days=30)
        clock.tick(dt.timedelta(days=2, hours=3))  # over the end of February, 03 March 09:00
        catch_up("staking", settings=rules())
        with transaction() as session:
            treasury_before = balance(session, "treasury")
            result = unstake(session, position, dt.datetime.now(dt.UTC), rules(ledger_early_unstake_penalty_bps=250))
            with pytest.raises(PermanentError) as again:
                unstake(session, position, dt.datetime.now(dt.UTC), rules())
        assert again.value.code == "already_unstaked"
        clock.tick(dt.timedelta(days=1))
        catch_up("staking", settings=rules())  # the unstaked position earns nothing more

    starts = [start for start, _, _ in payouts_of(position)]
    assert starts == [at("2026-02-27T00:00"), at("2026-02-28T00:00"), at("2026-03-01T00:00")]
    seconds = (at("2026-03-01T09:00") - at("2026-02-27T06:00")).total_seconds()
    assert sum(amount for _, amount, _ in payouts_of(position)) == PRINCIPAL * 1000 * int(seconds) // money.APR_SCALE
    penalty = PRINCIPAL * 250 // money.BPS
    assert result["early"] is True
    assert result["penalty"] == penalty
    with transaction() as session:
        assert balance(session, "treasury") == treasury_before - result["interest"] + penalty
        assert earned(session, "staking", staker) == sum(a for _, a, _ in payouts_of(position)) + PRINCIPAL - penalty


def test_runs_started_at_once_pay_each_period_once_and_the_database_refuses_a_second_payout(
    staker: uuid.UUID,
) -> None:
    with freeze_time("2026-05-01T00:00:00Z"):
        position = stake(staker)
    now = at("2026-05-04T00:00:05")

    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda _: catch_up("staking", now, rules()), range(4)))

    assert sorted(len(runs) for runs in done)[-1] <= 3
    assert sum(len(runs) for runs in done) == 3  # three days, each run by exactly one of the four
    assert [start for start, _, _ in payouts_of(position)] == [
        at("2026-05-01T00:00"),
        at("2026-05-02T00:00"),
        at("2026-05-03T00:00"),
    ]
    with transaction() as session, pytest.raises(IntegrityError, match="uq_staking_payouts_position_id"):
        session.execute(
            text(
                "INSERT INTO staking_payouts (position_id, period_start, accrued_from, accrued_to, amount, carry_after)"
                " VALUES (:p, :start, :start, :start + interval '1 day', 1, 0)"
            ),
            {"p": position, "start": at("2026-05-02T00:00")},
        )


@pytest.mark.parametrize(("rate_bps", "code"), [(0, "invalid_rate"), (5_001, "invalid_rate")])
def test_a_rate_of_zero_or_over_the_maximum_is_refused(staker: uuid.UUID, rate_bps: int, code: str) -> None:
    with pytest.raises(PermanentError) as refused:
        stake(staker, rate_bps=rate_bps)
    assert refused.value.code == code
    with transaction() as session:
        assert session.execute(text("SELECT count(*) FROM staking_positions")).scalar_one() == 0
