"""Integer money math. Every division floors, and each function says where the remainder goes.

The set-based SQL of the periodic runs implements the same rules; the tests hold the two to each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_FLOOR, Decimal, localcontext
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

K = TypeVar("K", bound="SupportsRichComparison")

BPS = 10_000
SECONDS_PER_YEAR = 31_536_000  # 365 days: a leap year pays one day more, at the same per-second rate
#: APR positions: paid = floor((principal * rate_bps * seconds + carry) / APR_SCALE); exact, nothing rounded.
APR_SCALE = BPS * SECONDS_PER_YEAR
#: APY positions: the period's growth factor (1 + APY)^(seconds / year) - 1, floored to 27 decimals.
APY_SCALE = 10**27


def accrue(principal: int, numerator: int, carry: int, scale: int) -> tuple[int, int]:
    """Pay ``floor((principal * numerator + carry) / scale)`` and keep the rest as the new carry.

    Floors in the protocol's favour; the carry (0 <= carry < scale) is paid out by later periods, so
    over any run of periods the total is the exact amount less at most one base unit.
    """
    paid, carry = divmod(principal * numerator + carry, scale)
    return paid, carry


def apr_numerator(rate_bps: int, seconds: int) -> int:
    """Simple interest: no compounding, rewards are paid out to the staker's wallet."""
    return rate_bps * seconds


def apy_numerator(rate_bps: int, seconds: int) -> int:
    """Compound interest whose yearly yield is exactly ``rate_bps``: floor(((1 + APY)^(t / year) - 1) * 1e27).

    Computed with 60 significant digits and floored, so the rate is never rounded up.
    """
    with localcontext() as context:
        context.prec = 60
        growth = (1 + Decimal(rate_bps) / BPS) ** (Decimal(seconds) / SECONDS_PER_YEAR) - 1
        return int((growth * APY_SCALE).to_integral_value(rounding=ROUND_FLOOR))


def royalty(price: int, seller_fee_basis_points: int) -> int:
    """``floor(price * bps / 10000)``; the fraction stays with the seller (Metaplex)."""
    return price * seller_fee_basis_points // BPS


def largest_remainder(total: int, weights: Sequence[tuple[K, int]]) -> dict[K, int]:
    """Split ``total`` by integer weights so the parts add up to exactly ``total`` (Hamilton's method).

    Each part is floored, then the leftover units go one each to the largest fractional remainders;
    ties go to the earlier key in ``weights``.
    """
    weight_sum = sum(weight for _, weight in weights)
    if weight_sum <= 0:
        raise ValueError("weights must have a positive sum")
    parts: dict[K, int] = {}
    remainders: list[tuple[int, int, K]] = []
    for position, (key, weight) in enumerate(weights):
        parts[key], remainder = divmod(total * weight, weight_sum)
        remainders.append((-remainder, position, key))
    leftover = total - sum(parts.values())
    for _, _, key in sorted(remainders)[:leftover]:
        parts[key] += 1
    return parts


def capped_pro_rata(budget: int, claims: Mapping[K, int], cap: int) -> dict[K, int]:
    """A period's rewards: each claim paid up to ``cap``, scaled down pro rata when they exceed ``budget``.

    Water-filling: a user whose scaled claim would pass the cap gets the cap, and what they cannot take
    raises the scale of the others (never above their claim). Parts are floored and the leftover units go
    by largest remainder (ties: smaller key), so exactly ``budget`` is paid when claims exceed it. What no
    one can take stays in the treasury. The SQL of the rewards run implements this same rule.
    """
    wanted = {key: min(claim, cap) for key, claim in claims.items() if claim > 0}
    if sum(wanted.values()) <= budget:
        return wanted
    ordered = sorted(wanted, key=lambda key: (-claims[key], key))
    rest = sum(claims[key] for key in ordered)
    capped = 0
    for key in ordered:  # claims descending: the largest claims are the first to reach the cap
        if (budget - capped * cap) * claims[key] <= cap * rest:
            break
        capped += 1
        rest -= claims[key]
    # The loop always stops at an uncapped user: the last one passes since budget < sum(min(claim, cap)).
    uncapped = [(key, claims[key]) for key in sorted(ordered[capped:])]
    return dict.fromkeys(ordered[:capped], cap) | largest_remainder(budget - capped * cap, uncapped)
