"""Decoding the transactions Roadie cares about: pure functions over solders transaction objects.

A transaction yields events keyed by the index of its top-level instruction:

- ``nft_mint``: a Token-2022 mint initialised (InitializeMint2, 0 decimals) by our mint authority, which then
  mints exactly one token (MintTo signed by that authority);
- ``nft_transfer``: a Token-2022 ``transfer_checked`` of one of our NFTs (the new owner's wallet resolved from the
  same transaction when it can be);
- ``token_transfer``: a ``transfer_checked`` out of the treasury token account (a payout), with the transaction's
  memo;
- ``stake_deposit``: a ``transfer_checked`` into the staking vault, with the transaction's memo (the terms);
- ``payment``: any other ``transfer_checked`` in a transaction the marketplace escrow signs a transfer in (the
  buyer paying the seller for the NFT the escrow hands over);
- ``memo``: a Memo program instruction, its UTF-8 text.

The decoder is strict about the instructions it interprets: an instruction of a shape it does not know raises
:class:`DecodeError`, and the indexer records the transaction as poison instead of guessing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from typing import Literal

from solders.instruction import AccountMeta, Instruction
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from solders.transaction_status import EncodedTransactionWithStatusMeta, UiTransactionStatusMeta
from spl.memo.constants import MEMO_PROGRAM_ID
from spl.token.constants import ASSOCIATED_TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID
from spl.token.instructions import decode_mint_to, decode_transfer_checked

from roadie.chain.addresses import MEMO_V1_PROGRAM_ID

MEMO_PROGRAMS = frozenset({MEMO_PROGRAM_ID, MEMO_V1_PROGRAM_ID})
TOKEN_PROGRAMS = frozenset({TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID})

# Token instruction tags (the first data byte) and their exact data lengths.
INITIALIZE_MINT2 = 20
MINT_TO = 7
TRANSFER_CHECKED = 12
_INITIALIZE_MINT2_LENGTHS = (1 + 1 + 32 + 1, 1 + 1 + 32 + 1 + 32)  # freeze authority: COption<Pubkey>
_MINT_TO_LENGTH = 1 + 8
_TRANSFER_CHECKED_LENGTH = 1 + 8 + 1
# Associated Token Account program: empty data or 0 = Create, 1 = CreateIdempotent (2 = RecoverNested: no owner).
_ATA_CREATES = (b"", b"\x00", b"\x01")

EventKind = Literal["nft_mint", "nft_transfer", "token_transfer", "stake_deposit", "payment", "memo"]


class DecodeError(ValueError):
    """A transaction (or one instruction of it) whose bytes do not have the shape the decoder requires."""


@dataclass(frozen=True)
class Watch:
    """What "ours" means: the platform's mint authority, the treasury and staking vault token accounts, the
    escrow wallet and the mints of our NFTs."""

    mint_authority: Pubkey
    treasury: Container[Pubkey]
    staking_vault: Container[Pubkey] = frozenset()
    escrow: Container[Pubkey] = frozenset()
    nft_mints: Container[str] = frozenset()


@dataclass(frozen=True)
class Event:
    """One decoded instruction. Token accounts are ``source``/``destination``; ``owner`` is the receiving wallet."""

    instruction_index: int
    kind: EventKind
    program: str
    mint: str | None = None
    source: str | None = None
    destination: str | None = None
    authority: str | None = None
    owner: str | None = None
    amount: int | None = None
    memo: str | None = None


@dataclass(frozen=True)
class DecodedTransaction:
    signature: str
    succeeded: bool
    events: list[Event] = field(default_factory=list)

    @property
    def memos(self) -> list[str]:
        return [event.memo for event in self.events if event.kind == "memo" and event.memo is not None]


def parse(
    encoded: EncodedTransactionWithStatusMeta, signature: str | None = None
) -> tuple[VersionedTransaction, UiTransactionStatusMeta | None]:
    """The transaction and its meta from the RPC's base64 encoding (checked to be ``signature``'s, if given).

    Read from the JSON form on purpose: solders' ``.transaction`` getter panics (a BaseException) on bytes that
    do not parse, where ``from_bytes`` raises an error the indexer can record.
    """
    data = json.loads(encoded.to_json()).get("transaction")
    if not (isinstance(data, list) and len(data) == 2 and data[1] == "base64" and isinstance(data[0], str)):
        raise DecodeError("the RPC did not return the transaction in base64")
    try:
        tx = VersionedTransaction.from_bytes(base64.b64decode(data[0], validate=True))
    except ValueError as exc:
        raise DecodeError(f"transaction bytes do not parse: {exc}") from exc
    if not tx.signatures or (signature is not None and str(tx.signatures[0]) != signature):
        raise DecodeError("the RPC returned a transaction with another signature")
    return tx, encoded.meta


def account_keys(message: Message | MessageV0, meta: UiTransactionStatusMeta | None) -> list[Pubkey]:
    """Static keys, then the addresses a v0 message loaded from lookup tables (writable first)."""
    keys = list(message.account_keys)
    lookups = message.address_table_lookups if isinstance(message, MessageV0) else []
    if lookups:
        loaded = meta.loaded_addresses if meta is not None else None
        if loaded is None:
            raise DecodeError("v0 transaction uses address lookup tables but the RPC returned no loaded addresses")
        keys += [*loaded.writable, *loaded.readonly]
    return keys


def instructions(tx: VersionedTransaction, meta: UiTransactionStatusMeta | None) -> list[Instruction]:
    """The top-level instructions with their account keys resolved."""
    message = tx.message
    keys = account_keys(message, meta)
    header, static = message.header, len(message.account_keys)
    signers = header.num_required_signatures
    loaded_writable = len(meta.loaded_addresses.writable) if meta is not None and meta.loaded_addresses else 0

    def writable(index: int) -> bool:
        if index < signers:
            return index < signers - header.num_readonly_signed_accounts
        if index < static:
            return index < static - header.num_readonly_unsigned_accounts
        return index < static + loaded_writable

    resolved = []
    for position, compiled in enumerate(message.instructions):
        indexes = [compiled.program_id_index, *compiled.accounts]
        if max(indexes) >= len(keys):
            raise DecodeError(f"instruction {position} refers to account {max(indexes)} of {len(keys)}")
        accounts = [AccountMeta(keys[index], index < signers, writable(index)) for index in indexes[1:]]
        resolved.append(Instruction(keys[compiled.program_id_index], bytes(compiled.data), accounts))
    return resolved


def token_account_owners(
    ixs: Sequence[Instruction], meta: UiTransactionStatusMeta | None, keys: Sequence[Pubkey]
) -> dict[str, str]:
    """Token account -> owning wallet, as far as the transaction itself says (ATA creation, token balances)."""
    owners: dict[str, str] = {}
    for ix in ixs:
        if ix.program_id == ASSOCIATED_TOKEN_PROGRAM_ID and bytes(ix.data) in _ATA_CREATES and len(ix.accounts) >= 3:
            owners[str(ix.accounts[1].pubkey)] = str(ix.accounts[2].pubkey)
    balances = (meta.post_token_balances or []) if meta is not None else []
    for balance in balances:
        if balance.owner is not None and balance.account_index < len(keys):
            owners.setdefault(str(keys[balance.account_index]), str(balance.owner))
    return owners


def _signs_a_transfer(ixs: Sequence[Instruction], signers: Container[Pubkey]) -> bool:
    """Whether one of ``signers`` is the authority of a ``transfer_checked`` (its fourth account) here."""
    return any(
        ix.program_id in TOKEN_PROGRAMS
        and bytes(ix.data)[:1] == bytes([TRANSFER_CHECKED])
        and len(ix.accounts) >= 4
        and ix.accounts[3].pubkey in signers
        for ix in ixs
    )


def transfer_mints(tx: VersionedTransaction) -> set[str]:
    """Mints named by the transaction's ``transfer_checked`` instructions: the candidates for "our NFT"."""
    keys = tx.message.account_keys
    mints = set()
    for compiled in tx.message.instructions:
        indexes = [compiled.program_id_index, *compiled.accounts[1:2]]
        if (
            len(indexes) == 2
            and max(indexes) < len(keys)
            and keys[indexes[0]] in TOKEN_PROGRAMS
            and bytes(compiled.data)[:1] == bytes([TRANSFER_CHECKED])
        ):
            mints.add(str(keys[indexes[1]]))
    return mints


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise DecodeError(message)


def _memo(index: int, ix: Instruction) -> Event:
    try:
        text = bytes(ix.data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"instruction {index}: memo is not UTF-8") from exc
    return Event(index, "memo", str(ix.program_id), memo=text)


def _initialized_mint(index: int, ix: Instruction) -> tuple[str, int, Pubkey]:
    """(mint, decimals, mint authority) of an InitializeMint2."""
    data = bytes(ix.data)
    _require(len(data) in _INITIALIZE_MINT2_LENGTHS, f"instruction {index}: InitializeMint2 of {len(data)} bytes")
    _require(len(ix.accounts) >= 1, f"instruction {index}: InitializeMint2 without its mint account")
    return str(ix.accounts[0].pubkey), data[1], Pubkey.from_bytes(data[2:34])


def _transfer(
    index: int,
    ix: Instruction,
    watch: Watch,
    new_nft_mints: set[str],
    owners: dict[str, str],
    memo: str | None,
    escrowed: bool,
) -> Event | None:
    """A payout from the treasury, a stake deposit, a transfer of one of our NFTs, a payment in an escrow
    settlement (``escrowed``), or None for someone else's transfer.

    Whose it is comes from the accounts; only then must the data have the exact layout.
    """
    _require(len(ix.accounts) >= 4, f"instruction {index}: TransferChecked with {len(ix.accounts)} accounts")
    source, mint, destination = ix.accounts[0].pubkey, str(ix.accounts[1].pubkey), ix.accounts[2].pubkey
    kind: EventKind
    if source in watch.treasury:
        kind = "token_transfer"
    elif destination in watch.staking_vault:
        kind = "stake_deposit"
    elif ix.program_id == TOKEN_2022_PROGRAM_ID and (mint in watch.nft_mints or mint in new_nft_mints):
        kind, memo = "nft_transfer", None
    elif escrowed:
        kind, memo = "payment", None
    else:
        return None
    _require(len(ix.data) == _TRANSFER_CHECKED_LENGTH, f"instruction {index}: TransferChecked of {len(ix.data)} bytes")
    transfer = decode_transfer_checked(ix)
    if kind == "nft_transfer":
        _require(
            (transfer.amount, transfer.decimals) == (1, 0),
            f"instruction {index}: transfer of {transfer.amount} units (decimals {transfer.decimals}) of an NFT",
        )
    return Event(
        index, kind, str(ix.program_id), mint=mint, source=str(source), destination=str(destination),
        authority=str(transfer.owner), owner=owners.get(str(destination)), amount=transfer.amount, memo=memo,
    )  # fmt: skip


def _our_new_nft_mint(index: int, ix: Instruction, watch: Watch) -> str | None:
    """The mint an InitializeMint2 creates, when it is one of our NFTs: Token-2022, 0 decimals, our authority."""
    if ix.program_id != TOKEN_2022_PROGRAM_ID:
        return None
    mint, decimals, authority = _initialized_mint(index, ix)
    return mint if decimals == 0 and authority == watch.mint_authority else None


def _nft_mint(
    index: int, ix: Instruction, watch: Watch, new_nft_mints: set[str], owners: dict[str, str]
) -> Event | None:
    """A MintTo of one of the NFTs this transaction created, signed by our authority, of exactly one token."""
    _require(len(ix.data) == _MINT_TO_LENGTH, f"instruction {index}: MintTo of {len(ix.data)} bytes")
    try:
        params = decode_mint_to(ix)
    except ValueError as exc:
        raise DecodeError(f"instruction {index}: {exc}") from exc
    if str(params.mint) not in new_nft_mints or params.mint_authority != watch.mint_authority:
        return None
    authority_signed = any(a.pubkey == params.mint_authority and a.is_signer for a in ix.accounts)
    _require(authority_signed, f"instruction {index}: MintTo of our NFT without its authority's signature")
    _require(params.amount == 1, f"instruction {index}: MintTo of {params.amount} tokens of an NFT")
    destination = str(params.dest)
    return Event(
        index, "nft_mint", str(ix.program_id), mint=str(params.mint), destination=destination,
        authority=str(params.mint_authority), owner=owners.get(destination), amount=params.amount,
    )  # fmt: skip


def decode(
    signature: str, tx: VersionedTransaction, meta: UiTransactionStatusMeta | None, watch: Watch
) -> DecodedTransaction:
    """The events of one transaction. A failed transaction changed nothing, so it has none."""
    if meta is not None and meta.err is not None:
        return DecodedTransaction(signature, succeeded=False)
    keys = account_keys(tx.message, meta)
    ixs = instructions(tx, meta)
    owners = token_account_owners(ixs, meta, keys)
    memos = [_memo(index, ix) for index, ix in enumerate(ixs) if ix.program_id in MEMO_PROGRAMS]
    memo_text = memos[0].memo if memos else None
    escrowed = _signs_a_transfer(ixs, watch.escrow)
    new_nft_mints: set[str] = set()
    events: list[Event] = list(memos)
    for index, ix in enumerate(ixs):
        if ix.program_id not in TOKEN_PROGRAMS or not ix.data:
            continue
        event: Event | None = None
        if ix.data[0] == INITIALIZE_MINT2:
            mint = _our_new_nft_mint(index, ix, watch)
            new_nft_mints.update([mint] if mint else [])
        elif ix.data[0] == MINT_TO:
            event = _nft_mint(index, ix, watch, new_nft_mints, owners)
        elif ix.data[0] == TRANSFER_CHECKED:
            event = _transfer(index, ix, watch, new_nft_mints, owners, memo_text, escrowed)
        if event is not None:
            events.append(event)
    events.sort(key=lambda event: event.instruction_index)
    return DecodedTransaction(signature, succeeded=True, events=events)
