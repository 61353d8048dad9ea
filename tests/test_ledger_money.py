"""Properties of the money math: nobody is overpaid, totals are conserved, parts add up, carries stay in range."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from roadie.ledger import money

amounts = st.integers(min_value=0, max_value=10**24)
principals = st.integers(min_value=1, max_value=10**21)
rates = st.integers(min_value=1, max_value=100_000)


@given(principals, rates, st.lists(st.integers(min_value=0, max_value=400 * 86_400), min_size=1, max_size=60))
def test_accrual_with_carry_pays_the_exact_amount_less_the_carry(principal: int, rate: int, periods: list[int]) -> None:
    carry, paid = 0, 0
    for seconds in periods:
        part, carry = money.accrue(principal, money.apr_numerator(rate, seconds), carry, money.APR_SCALE)
        assert part >= 0
        assert 0 <= carry < money.APR_SCALE
        paid += part
    exact = Fraction(principal * rate * sum(periods), money.APR_SCALE)
    assert paid + Fraction(carry, money.APR_SCALE) == exact
    assert paid <= exact < paid + 1


def test_the_notes_example_loses_nothing_to_8760_hourly_floors() -> None:
    principal = 1_234_567_891_234  # 1,234.567891234 tokens of 9 decimals at 7 %, hourly for a year
    carry, paid = 0, 0
    for _ in range(8760):
        part, carry = money.accrue(principal, money.apr_numerator(700, 3600), carry, money.APR_SCALE)
        paid += part
    # 7 % of the principal is 86,419,752,386.38. The note's per-second rate_wad = floor(APR * 1e18 / year)
    # truncates the rate itself and gets 86,419,752,352; a basis-point numerator over bps * year does not.
    assert paid == 86_419_752_386
    assert carry == principal * 700 * 8760 * 3600 - paid * money.APR_SCALE


@given(principals, rates, st.integers(min_value=1, max_value=366 * 86_400))
def test_apy_factors_are_never_rounded_up(principal: int, rate: int, seconds: int) -> None:
    factor = money.apy_numerator(rate, seconds)
    growth = Fraction(factor, money.APY_SCALE)
    exact = (1 + rate / money.BPS) ** (seconds / money.SECONDS_PER_YEAR) - 1
    assert 0 <= growth <= Fraction(exact) + Fraction(1, 10**12)  # float reference, loose on purpose
    assert money.apy_numerator(rate, money.SECONDS_PER_YEAR) in range(
        rate * money.APY_SCALE // money.BPS - 1, rate * money.APY_SCALE // money.BPS + 1
    )


def test_royalty_of_the_metaplex_example() -> None:
    fee = money.royalty(1_000_000_333, 750)
    assert fee == 75_000_024
    assert money.largest_remainder(fee, [("a", 50), ("b", 33), ("c", 17)]) == {
        "a": 37_500_012,
        "b": 24_750_008,
        "c": 12_750_004,
    }


shares = st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=5).filter(lambda s: sum(s) > 0)


@given(amounts, shares)
def test_largest_remainder_parts_add_up_and_each_is_within_one_unit(total: int, weights: list[int]) -> None:
    parts = money.largest_remainder(total, list(enumerate(weights)))
    assert sum(parts.values()) == total
    for key, weight in enumerate(weights):
        exact = Fraction(total * weight, sum(weights))
        assert exact - 1 < parts[key] < exact + 1


def test_largest_remainder_splits_a_thousand_three_ways_as_334_333_333() -> None:
    assert money.largest_remainder(1000, [(1, 1), (2, 1), (3, 1)]) == {1: 334, 2: 333, 3: 333}


@given(st.integers(min_value=0, max_value=10**15), st.integers(min_value=0, max_value=10**12))
def test_royalty_never_exceeds_the_price(price: int, bps_seed: int) -> None:
    bps = bps_seed % 10_001
    assert 0 <= money.royalty(price, bps) <= price


claims = st.dictionaries(st.integers(min_value=1, max_value=50), st.integers(min_value=0, max_value=10**9), max_size=30)


@given(amounts.map(lambda b: b % 10**10), claims, st.integers(min_value=1, max_value=10**9))
def test_capped_pro_rata_overpays_no_one_and_pays_the_budget_when_claims_exceed_it(
    budget: int, wanted: dict[int, int], cap: int
) -> None:
    paid = money.capped_pro_rata(budget, wanted, cap)
    for user, amount in paid.items():
        assert 0 <= amount <= min(wanted[user], cap)
    effective = sum(min(claim, cap) for claim in wanted.values())
    assert sum(paid.values()) == min(budget, effective)


@given(claims, st.integers(min_value=1, max_value=10**9), st.integers(min_value=1, max_value=10**10))
def test_capped_pro_rata_is_pro_rata_among_the_uncapped(wanted: dict[int, int], cap: int, budget: int) -> None:
    paid = money.capped_pro_rata(budget, wanted, cap)
    uncapped = [user for user, amount in paid.items() if amount < min(wanted[user], cap)]
    for a in uncapped:  # users below their cap and claim were scaled by the same factor, to within a unit
        for b in uncapped:
            assert abs(paid[a] * wanted[b] - paid[b] * wanted[a]) <= wanted[a] + wanted[b]


def test_capped_pro_rata_redistributes_what_a_capped_user_cannot_take() -> None:
    assert money.capped_pro_rata(1000, {1: 900, 2: 450, 3: 450}, 400) == {1: 400, 2: 300, 3: 300}
    assert money.capped_pro_rata(1000, {1: 900, 2: 900}, 400) == {1: 400, 2: 400}  # 200 stay in the treasury
