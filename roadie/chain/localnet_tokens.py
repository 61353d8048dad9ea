"""The local chain's answers about token and program accounts, in the shapes of Solana's JSON-RPC.

Wallets, explorers and the ``spl-token`` CLI read tokens with ``getTokenAccountsByOwner``,
``getTokenSupply`` and ``getProgramAccounts``. LiteSVM cannot list accounts, so the local chain
scans the accounts its transactions have touched (every key of every landed transaction), which
on a local chain is every account there is. Encodings: ``base64`` (the default here) and
``jsonParsed`` for token accounts, as the SPL Token and Token-2022 parsers of a validator give them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import based58
from solders.account import Account, AccountJSON
from solders.account_decoder import ParsedAccount, UiTokenAmount
from solders.pubkey import Pubkey
from solders.rpc import responses as rpc
from solders.token.state import Mint, TokenAccount, TokenAccountState
from spl.token.constants import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID

#: The token programs and the names their accounts' ``jsonParsed`` form gives them.
TOKEN_PROGRAMS = {TOKEN_PROGRAM_ID: "spl-token", TOKEN_2022_PROGRAM_ID: "spl-token-2022"}
ACCOUNT_LEN, MINT_LEN = 165, 82
#: Token-2022 puts an account-type byte after the 165-byte base when extensions follow.
MINT_TYPE, ACCOUNT_TYPE = 1, 2
#: Token-2022 account extensions by type number, named as the validator's parser names them.
ACCOUNT_EXTENSIONS = {7: "immutableOwner", 8: "memoTransfer", 15: "cpiGuard", 6: "transferFeeAmount"}
#: Account states by their number (solders' state values cannot be dictionary keys).
STATES = {
    int(TokenAccountState.Uninitialized): "uninitialized",
    int(TokenAccountState.Initialized): "initialized",
    int(TokenAccountState.Frozen): "frozen",
}


class InvalidParamError(ValueError):
    """A parameter the validator would refuse with -32602."""


@dataclass(frozen=True)
class Keyed:
    pubkey: Pubkey
    account: Account


def _account_type(account: Account) -> int | None:
    data = bytes(account.data)
    if account.owner not in TOKEN_PROGRAMS:
        return None
    if len(data) == MINT_LEN:
        return MINT_TYPE
    if len(data) == ACCOUNT_LEN:
        return ACCOUNT_TYPE
    return data[ACCOUNT_LEN] if len(data) > ACCOUNT_LEN else None


def token_account(account: Account) -> TokenAccount | None:
    """The account's SPL token-account state, or None when it holds something else."""
    if _account_type(account) != ACCOUNT_TYPE:
        return None
    return TokenAccount.from_bytes(bytes(account.data[:ACCOUNT_LEN]))


def mint(account: Account | None) -> Mint | None:
    """The account's SPL mint state, or None when it is no mint."""
    if account is None or _account_type(account) != MINT_TYPE:
        return None
    return Mint.from_bytes(bytes(account.data[:MINT_LEN]))


def ui_amount(amount: int, decimals: int) -> UiTokenAmount:
    """An amount as the RPC shows it: base units as a string, and the exact decimal string without trailing zeros."""
    if decimals == 0:
        text = str(amount)
    else:
        digits = f"{amount:0{decimals + 1}d}"
        whole, fraction = digits[:-decimals], digits[-decimals:].rstrip("0")
        text = f"{whole}.{fraction}" if fraction else whole
    return UiTokenAmount(amount / 10**decimals, decimals, str(amount), text)  # the float is display only


def _extensions(data: bytes) -> list[dict[str, str]]:
    """Token-2022 account extensions (type-length-value after the account-type byte)."""
    found, offset = [], ACCOUNT_LEN + 1
    while offset + 4 <= len(data):
        kind, length = (
            int.from_bytes(data[offset : offset + 2], "little"),
            int.from_bytes(data[offset + 2 : offset + 4], "little"),
        )
        if kind == 0:
            break
        found.append({"extension": ACCOUNT_EXTENSIONS.get(kind, "unparseableExtension")})
        offset += 4 + length
    return found


def parsed_token_account(account: Account, token: TokenAccount, decimals: int) -> ParsedAccount:
    """A token account's ``jsonParsed`` data."""
    info: dict[str, Any] = {
        "isNative": token.is_native is not None,
        "mint": str(token.mint),
        "owner": str(token.owner),
        "state": STATES[int(token.state)],
        "tokenAmount": json_data(ui_amount(token.amount, decimals)),
    }
    if token.delegate is not None:
        info["delegate"] = str(token.delegate)
        info["delegatedAmount"] = json_data(ui_amount(token.delegated_amount, decimals))
    if token.close_authority is not None:
        info["closeAuthority"] = str(token.close_authority)
    if token.is_native is not None:
        info["rentExemptReserve"] = json_data(ui_amount(token.is_native, decimals))
    data = bytes(account.data)
    if account.owner == TOKEN_2022_PROGRAM_ID and len(data) > ACCOUNT_LEN:
        info["extensions"] = _extensions(data)
    return ParsedAccount(TOKEN_PROGRAMS[account.owner], {"info": info, "type": "account"}, len(data))


def _memcmp(data: bytes, spec: Any) -> bool:
    if not isinstance(spec, dict) or not isinstance(spec.get("offset"), int) or not isinstance(spec.get("bytes"), str):
        raise InvalidParamError("memcmp needs an integer offset and a bytes string")
    try:
        wanted = (
            base64.b64decode(spec["bytes"], validate=True)
            if spec.get("encoding") == "base64"
            else based58.b58decode(spec["bytes"].encode())
        )
    except ValueError as exc:
        raise InvalidParamError(f"memcmp bytes do not decode: {exc}") from exc
    return data[spec["offset"] : spec["offset"] + len(wanted)] == wanted


def matches(account: Account, filters: Iterable[Any]) -> bool:
    """``getProgramAccounts`` filters: ``dataSize``, ``memcmp`` (base58 or base64) and ``tokenAccountState``."""
    data = bytes(account.data)
    for spec in filters:
        if not isinstance(spec, dict) or len(spec) != 1:
            raise InvalidParamError(f"unknown filter: {spec!r}")
        ((kind, value),) = spec.items()
        if kind == "dataSize" and isinstance(value, int):
            ok = len(data) == value
        elif kind == "memcmp":
            ok = _memcmp(data, value)
        elif kind == "tokenAccountState":
            ok = token_account(account) is not None
        else:
            raise InvalidParamError(f"unknown filter: {spec!r}")
        if not ok:
            return False
    return True


def json_data(value: Any) -> Any:
    """A solders value as JSON data."""
    return json.loads(value.to_json())


def encoded(keyed: Keyed, encoding: str, decimals_of: dict[Pubkey, int]) -> Any:
    """One keyed account as JSON: base64, or jsonParsed for token accounts (others stay base64, as on a validator)."""
    account = keyed.account
    if encoding not in ("base64", "jsonParsed"):
        raise InvalidParamError(f"unsupported encoding here: {encoding} (base64 and jsonParsed are)")
    if encoding == "jsonParsed" and (token := token_account(account)) is not None:
        parsed = parsed_token_account(account, token, decimals_of.get(token.mint, 0))
        json_account = AccountJSON(account.lamports, parsed, account.owner, account.executable, account.rent_epoch)
        return json_data(rpc.RpcKeyedAccountJsonParsed(keyed.pubkey, json_account))
    return json_data(rpc.RpcKeyedAccount(keyed.pubkey, account))
