"""Royalties split to the unit, payouts once per account and period above a threshold, paid only when final."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from roadie.db import transaction
from roadie.jobs.errors import PermanentError
from roadie.ledger import money
from roadie.ledger.check import violations
from roadie.ledger.payouts import apply_statuses
from roadie.ledger.periods import catch_up
from roadie.ledger.royalties import SaleInput, record_sale
from roadie.settings import get_settings
from tests.fixtures.ledger import at, balance, earned, make_nft, make_user, rules

pytestmark = pytest.mark.usefixtures("books")


def sale(nft: uuid.UUID, creators: list[tuple[uuid.UUID, int]] | None, price: int = 1_000_000_333) -> SaleInput:
    return SaleInput(uuid.uuid4().hex, nft, price, 750, at("2026-04-01T09:00"), creators)


def test_a_sale_royalty_is_split_by_largest_remainder_and_distributed_by_the_period() -> None:
    with transaction() as session:
        a, b, c = make_user(session), make_user(session), make_user(session)
        nft = make_nft(session, a)
        first = sale(nft, [(a, 50), (b, 33), (c, 17)])
        stored, new = record_sale(session, first, "api", at("2026-04-01T09:05"))
        _, repeated = record_sale(session, first, "indexer", at("2026-04-01T09:06"))  # the indexer saw it too
        record_sale(session, sale(nft, None), "api", at("2026-04-01T09:07"))  # no creators: the NFT's creator
    assert (new, repeated) == (True, False)
    assert stored.royalty == 75_000_024

    [run] = catch_up("royalties", at("2026-04-02T00:00"), rules(ledger_min_payout=10**12))

    assert run["sales"] == 2
    with transaction() as session:
        parts = {u: earned(session, "royalties", u) for u in (a, b, c)}
    assert parts == {a: 37_500_012 + 75_000_024, b: 24_750_008, c: 12_750_004}


def test_shares_that_do_not_sum_to_100_are_refused_and_nothing_is_stored() -> None:
    with transaction() as session:
        a, b = make_user(session), make_user(session)
        nft = make_nft(session, a)
    for creators in ([(a, 50), (b, 49)], [(a, 50), (a, 50)]):
        with transaction() as session, pytest.raises(PermanentError) as refused:
            record_sale(session, sale(nft, creators), "api", at("2026-04-01T09:05"))
        assert refused.value.code == "invalid_shares"
    with transaction() as session:
        assert session.execute(text("SELECT count(*) FROM sales")).scalar_one() == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=0, max_value=10**20), st.integers(min_value=0, max_value=10_000), st.data())
def test_the_database_accepts_every_split_the_money_math_makes(price: int, bps: int, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=100), max_size=4)))
    weights = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]  # up to 5 shares summing to 100
    with transaction() as session:
        users = [make_user(session, wallet=False) for _ in weights]
        nft = make_nft(session, users[0])
        stored, _ = record_sale(
            session,
            SaleInput(
                uuid.uuid4().hex, nft, price, bps, at("2026-04-01T09:00"), list(zip(users, weights, strict=True))
            ),
            "indexer",
            at("2026-04-01T09:00"),
        )
        parts = session.execute(text("SELECT sum(amount) FROM sale_creators WHERE sale_id = :s"), {"s": stored.id})
        assert parts.scalar_one() == money.royalty(price, bps) == stored.royalty


def test_balances_are_paid_once_per_period_above_the_threshold_and_count_as_paid_only_when_finalized() -> None:
    with transaction() as session:
        rich, poor, walletless = make_user(session), make_user(session), make_user(session, wallet=False)
        nft = make_nft(session, rich)
        for user, price in ((rich, 10_000_000), (poor, 100), (walletless, 10_000_000)):
            record_sale(
                session,
                SaleInput(uuid.uuid4().hex, nft, price, 10_000, at("2026-04-01T09:00"), [(user, 100)]),
                "api",
                at("2026-04-01T09:00"),
            )

    catch_up("royalties", at("2026-04-03T00:00"), rules(ledger_min_payout=1_000))

    with transaction() as session:
        payouts = session.execute(text("SELECT id, amount, status, period_start FROM payouts")).all()
        assert [(int(p.amount), p.status, p.period_start) for p in payouts] == [
            (10_000_000, "pending", at("2026-04-01T00:00"))
        ]
        assert balance(session, "royalties", poor) == 100  # dust below the threshold, carried
        assert balance(session, "royalties", walletless) == 10_000_000  # no wallet: carried
        assert balance(session, "clearing") == 10_000_000
        payout = payouts[0].id
        apply_statuses(session, {payout: "submitted"}, dt.datetime.now(dt.UTC))
        assert balance(session, "external") == -(10_000_000 + 100 + 10_000_000)  # nothing paid yet
        apply_statuses(session, {payout: "finalized"}, dt.datetime.now(dt.UTC))
        apply_statuses(session, {payout: "finalized"}, dt.datetime.now(dt.UTC))  # reported twice: settled once
        apply_statuses(session, {payout: "failed"}, dt.datetime.now(dt.UTC))  # finalized is final
        assert session.execute(text("SELECT status FROM payouts")).scalar_one() == "finalized"
        assert balance(session, "clearing") == 0
        assert balance(session, "external") == -(100 + 10_000_000)
        assert violations(session, get_settings()) == []
