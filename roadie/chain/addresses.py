"""Validated Solana addresses and amounts for payload models: a bad one is a 422 naming the field.

A wallet is an address that can receive tokens and spend them again: on the ed25519 curve (someone holds
its key) and not one of the chain's own programs or special accounts, which are on the curve too but whose
key nobody holds. Paying one of those loses the money, so intake refuses them and payouts hold them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field
from solders.address_lookup_table_account import ID as ADDRESS_LOOKUP_TABLE_PROGRAM_ID
from solders.compute_budget import ID as COMPUTE_BUDGET_PROGRAM_ID
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from spl.memo.constants import MEMO_PROGRAM_ID
from spl.token.constants import (
    ASSOCIATED_TOKEN_PROGRAM_ID,
    TOKEN_2022_PROGRAM_ID,
    TOKEN_PROGRAM_ID,
    WRAPPED_SOL_MINT,
)

U64_MAX = 2**64 - 1

MEMO_V1_PROGRAM_ID = Pubkey.from_string("Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo")

#: Addresses on the curve that no one can spend from, by name: programs, sysvars, the incinerator.
NOT_WALLETS: dict[Pubkey, str] = {
    SYSTEM_PROGRAM_ID: "the System Program",
    TOKEN_PROGRAM_ID: "the SPL Token program",
    TOKEN_2022_PROGRAM_ID: "the Token-2022 program",
    ASSOCIATED_TOKEN_PROGRAM_ID: "the Associated Token Account program",
    MEMO_PROGRAM_ID: "the Memo program",
    MEMO_V1_PROGRAM_ID: "the Memo v1 program",
    COMPUTE_BUDGET_PROGRAM_ID: "the Compute Budget program",
    ADDRESS_LOOKUP_TABLE_PROGRAM_ID: "the Address Lookup Table program",
    WRAPPED_SOL_MINT: "the wrapped SOL mint",
    **{
        Pubkey.from_string(address): name
        for address, name in {
            "Stake11111111111111111111111111111111111111": "the Stake program",
            "Vote111111111111111111111111111111111111111": "the Vote program",
            "Config1111111111111111111111111111111111111": "the Config program",
            "BPFLoader1111111111111111111111111111111111": "the BPF loader",
            "BPFLoader2111111111111111111111111111111111": "the BPF loader 2",
            "BPFLoaderUpgradeab1e11111111111111111111111": "the upgradeable BPF loader",
            "NativeLoader1111111111111111111111111111111": "the native loader",
            "Ed25519SigVerify111111111111111111111111111": "the Ed25519 program",
            "KeccakSecp256k11111111111111111111111111111": "the Secp256k1 program",
            "metaqbxxUerdq28cj1RbAWkYQm3ybzjb6a8bt518x1s": "the Metaplex Token Metadata program",
            "1nc1nerator11111111111111111111111111111111": "the incinerator",
            "SysvarC1ock11111111111111111111111111111111": "the Clock sysvar",
            "SysvarRent111111111111111111111111111111111": "the Rent sysvar",
            "SysvarEpochSchedu1e111111111111111111111111": "the EpochSchedule sysvar",
            "Sysvar1nstructions1111111111111111111111111": "the Instructions sysvar",
            "SysvarRecentB1ockHashes11111111111111111111": "the RecentBlockhashes sysvar",
            "SysvarRewards111111111111111111111111111111": "the Rewards sysvar",
            "SysvarS1otHashes111111111111111111111111111": "the SlotHashes sysvar",
            "SysvarStakeHistory1111111111111111111111111": "the StakeHistory sysvar",
        }.items()
    },
}


def why_not_a_wallet(address: str) -> str | None:
    """Why tokens sent to ``address`` could never be spent, or None when it is a wallet."""
    try:
        key = Pubkey.from_string(address)
    except ValueError as exc:
        return f"not a base58 Solana address ({exc})"
    if key in NOT_WALLETS:
        return f"not a wallet: the address is {NOT_WALLETS[key]}, which no one can spend from"
    if not key.is_on_curve():
        return "not a wallet: the address is off the ed25519 curve (a program-derived address has no owner key)"
    return None


def _address(value: str) -> str:
    try:
        return str(Pubkey.from_string(value))
    except ValueError as exc:
        raise ValueError(f"not a base58 Solana address ({exc})") from None


def _wallet(value: str) -> str:
    address = _address(value)
    problem = why_not_a_wallet(address)
    if problem:
        raise ValueError(problem)
    return address


def _mint(value: str) -> str:
    address = _address(value)
    key = Pubkey.from_string(address)
    if key in NOT_WALLETS and key != WRAPPED_SOL_MINT:
        raise ValueError(f"not a token mint: the address is {NOT_WALLETS[key]}")
    return address


#: Any account address (32 bytes in base58).
SolanaAddress = Annotated[str, Field(min_length=32, max_length=44), AfterValidator(_address)]
#: An address that can receive and spend: someone holds its key (see :func:`why_not_a_wallet`).
SolanaWallet = Annotated[str, Field(min_length=32, max_length=44), AfterValidator(_wallet)]
#: A token's mint: any address but a program, sysvar or the incinerator (wrapped SOL's mint is a mint).
SolanaMint = Annotated[str, Field(min_length=32, max_length=44), AfterValidator(_mint)]
#: A token amount in base units, as SPL Token stores it (u64).
TokenUnits = Annotated[int, Field(strict=True, gt=0, le=U64_MAX)]


def utf8_at_most(limit: int) -> AfterValidator:
    """A string whose UTF-8 encoding fits ``limit`` bytes (on-chain limits count bytes, not characters)."""

    def check(value: str) -> str:
        if len(value.encode()) > limit:
            raise ValueError(f"longer than the on-chain limit of {limit} UTF-8 bytes")
        return value

    return AfterValidator(check)
