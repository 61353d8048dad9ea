"""What a decoded transaction means for the ledger: a stake deposit's terms, an escrow settlement's sale.

Pure functions over decoded events; :mod:`roadie.indexer.store` keeps what they find and books it once final.

A stake deposit names its terms in the transaction's memo (the Memo program), in this grammar::

    roadie:stake[:<key>=<integer>[,<key>=<integer>]...]

with the keys ``apy_bps`` (a compounding yearly yield, in basis points) or ``apr_bps`` (simple yearly interest
paid out each period), at most one of the two, and ``lock_days`` (unstaking earlier costs the penalty).
``roadie:stake`` alone stakes at the product's default: 15 % APY (1500 basis points), no lock.
"""

from __future__ import annotations

import re
from collections.abc import Container, Sequence
from dataclasses import dataclass

from solders.pubkey import Pubkey

from roadie.indexer.decode import Event

STAKE_MEMO = "roadie:stake"
#: The seeds' default staking terms (``apy Decimal @default(15.0)``): 15 % a year, compounding.
DEFAULT_RATE_BPS, DEFAULT_RATE_KIND = 1500, "apy"
MAX_LOCK_DAYS = 10 * 366
_TERM = re.compile(r"(apy_bps|apr_bps|lock_days)=([0-9]{1,9})")


class FactError(ValueError):
    """A deposit or a settlement the ledger cannot take as it is: ``code`` names why (kept on its row)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class StakeTerms:
    rate_bps: int
    rate_kind: str
    lock_seconds: int


@dataclass(frozen=True)
class Settlement:
    """An NFT the escrow handed to ``buyer`` while ``buyer`` paid ``price`` base units of ``payment_mint`` to
    ``seller``; ``refusal`` says why it is not a sale the ledger can take (the payment fields are then unset)."""

    nft_mint: str
    buyer: str | None
    seller: str | None = None
    payment_mint: str | None = None
    price: int | None = None
    refusal: FactError | None = None


def stake_terms(memo: str | None) -> StakeTerms:
    """The terms a deposit's memo names, or :class:`FactError` ``invalid_memo`` saying what is wrong."""
    if memo is None:
        raise FactError("invalid_memo", f"a stake deposit needs a {STAKE_MEMO!r} memo; the transaction has none")
    if memo != STAKE_MEMO and not memo.startswith(STAKE_MEMO + ":"):
        raise FactError("invalid_memo", f"the memo {memo[:80]!r} does not start with {STAKE_MEMO!r}")
    terms: dict[str, int] = {}
    for part in memo.removeprefix(STAKE_MEMO).removeprefix(":").split(",") if memo != STAKE_MEMO else []:
        match = _TERM.fullmatch(part)
        if match is None:
            raise FactError("invalid_memo", f"{part[:40]!r} is not apy_bps=, apr_bps= or lock_days= an integer")
        if match[1] in terms:
            raise FactError("invalid_memo", f"{match[1]} is given twice")
        terms[match[1]] = int(match[2])
    if "apy_bps" in terms and "apr_bps" in terms:
        raise FactError("invalid_memo", "give apy_bps or apr_bps, not both")
    kind = "apr" if "apr_bps" in terms else DEFAULT_RATE_KIND
    rate = terms.get(f"{kind}_bps", DEFAULT_RATE_BPS)
    if rate == 0:
        raise FactError("invalid_memo", f"{kind}_bps must be positive")
    if terms.get("lock_days", 0) > MAX_LOCK_DAYS:
        raise FactError("invalid_memo", f"lock_days must be at most {MAX_LOCK_DAYS}")
    return StakeTerms(rate, kind, terms.get("lock_days", 0) * 86_400)


def settlement(events: Sequence[Event], escrow: Container[Pubkey]) -> Settlement | None:
    """The sale an escrow settlement makes: one of our NFTs out of the escrow, one payment by its receiver.

    None when the escrow hands over none of our NFTs here.
    """
    handed = [
        e
        for e in events
        if e.kind == "nft_transfer" and e.authority is not None and Pubkey.from_string(e.authority) in escrow
    ]
    if not handed:
        return None
    nft = handed[0]
    if len(handed) > 1:
        problem = FactError("ambiguous_settlement", f"the escrow hands over {len(handed)} NFTs in one transaction")
        return Settlement(str(nft.mint), nft.owner, refusal=problem)
    payments = [e for e in events if e.kind == "payment" and e.authority == nft.owner]
    if len(payments) != 1:
        code = "ambiguous_settlement" if payments else "unpaid_settlement"
        problem = FactError(code, f"the NFT's receiver makes {len(payments)} payments in the settlement, not one")
        return Settlement(str(nft.mint), nft.owner, refusal=problem)
    payment = payments[0]
    return Settlement(str(nft.mint), nft.owner, payment.owner, payment.mint, payment.amount)
