"""Validated Solana addresses and amounts for payload models: a bad one is a 422 naming the field."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field
from solders.pubkey import Pubkey

U64_MAX = 2**64 - 1


def _address(value: str) -> str:
    try:
        return str(Pubkey.from_string(value))
    except ValueError as exc:
        raise ValueError(f"not a base58 Solana address ({exc})") from None


def _wallet(value: str) -> str:
    address = _address(value)
    if not Pubkey.from_string(address).is_on_curve():
        raise ValueError(
            "not a wallet: the address is off the ed25519 curve (a program-derived address has no owner key)"
        )
    return address


#: Any account address (32 bytes in base58).
SolanaAddress = Annotated[str, Field(min_length=32, max_length=44), AfterValidator(_address)]
#: An address someone holds the key of: on the ed25519 curve.
SolanaWallet = Annotated[str, Field(min_length=32, max_length=44), AfterValidator(_wallet)]
#: A token amount in base units, as SPL Token stores it (u64).
TokenUnits = Annotated[int, Field(strict=True, gt=0, le=U64_MAX)]


def utf8_at_most(limit: int) -> AfterValidator:
    """A string whose UTF-8 encoding fits ``limit`` bytes (on-chain limits count bytes, not characters)."""

    def check(value: str) -> str:
        if len(value.encode()) > limit:
            raise ValueError(f"longer than the on-chain limit of {limit} UTF-8 bytes")
        return value

    return AfterValidator(check)
