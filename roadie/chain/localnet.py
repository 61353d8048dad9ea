"""A local Solana chain for tests and ``make demo``: LiteSVM behind a JSON-RPC server on 127.0.0.1.

LiteSVM is a real Solana runtime (SPL Token, Token-2022, Associated Token Account and Memo are
loaded) but has no blocks, history, commitment levels or forks. This module adds them, and
answers with solders' own RPC response types, so solana-py's ``AsyncClient`` over HTTP (the
production code path) runs unchanged:

- The open slot collects transactions (``processed``); closing it makes a block (``confirmed``);
  a block ``finality_lag`` blocks behind the newest is ``finalized``, and finality never goes back.
- A blockhash is the hash of a block and stays valid for 150 blocks, as on mainnet.
- ``roadie_skipSlot`` skips slots (``getBlock`` answers -32007); slots not produced yet answer -32004.
- ``roadie_orphan`` drops the newest unfinalized blocks and the open slot, as a fork would: their
  signatures vanish and their effects on accounts are undone (each transaction's writable accounts
  are saved before it runs).
- Blocks are produced on a timer (``slot_ms``; 0: only on request); ``roadie_pause``/``roadie_resume``,
  ``roadie_advance``, ``roadie_status`` and ``roadie_failNext`` (answer the next requests with an HTTP
  error) let tests in another process drive it. These methods exist only here.

Token and program accounts (``getTokenAccountsByOwner``/``ByDelegate``, ``getTokenSupply``,
``getTokenLargestAccounts``, ``getProgramAccounts``) are answered from the accounts that landed
transactions touched (:mod:`roadie.chain.localnet_tokens`). Fees are charged as a cluster charges them
(:mod:`roadie.chain.fees`: signatures plus priority fee), and ``getRecentPrioritizationFees`` reports them.

Not modelled: websocket subscriptions, ``jsonParsed`` instructions, address lookup tables.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import based58
from solders.account import Account
from solders.hash import Hash
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.rpc import responses as rpc
from solders.signature import Signature
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.system_program import TransferParams, transfer
from solders.token.state import Mint, TokenAccount
from solders.transaction import Legacy, Transaction, VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata
from solders.transaction_status import (
    EncodedTransactionWithStatusMeta,
    TransactionConfirmationStatus,
    TransactionErrorFieldless,
    UiCompiledInstruction,
    UiConfirmedBlock,
    UiInnerInstructions,
    UiLoadedAddresses,
    UiTransactionStatusMeta,
    UiTransactionTokenBalance,
)
from spl.memo.constants import MEMO_PROGRAM_ID

from roadie.chain import localnet_tokens as tokens
from roadie.chain.addresses import MEMO_V1_PROGRAM_ID
from roadie.chain.fees import compute_budget, transaction_fee
from roadie.chain.localnet_tokens import Keyed
from roadie.processes import ProcessGroup
from roadie.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: Blocks a blockhash stays valid for (solana's MAX_PROCESSING_AGE).
MAX_PROCESSING_AGE = 150
SLOT_SECONDS = 0.4
#: Status of signatures older than this many slots is found only with searchTransactionHistory.
STATUS_CACHE_SLOTS = 300
FAUCET_LAMPORTS = 10**18
MEMO_PROGRAMS = {MEMO_PROGRAM_ID, MEMO_V1_PROGRAM_ID}
VERSION = "2.1.0"
COMMITMENTS = ("processed", "confirmed", "finalized")
#: How often a chain with a state file writes it when transactions landed (and always at shutdown).
SAVE_EVERY_S = 2.0


class RpcFailure(Exception):  # noqa: N818 - named after what it is, a JSON-RPC failure
    """A JSON-RPC error answer: code, message and optional data, as a validator sends them."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def _empty_account() -> Account:
    """What an account that did not exist is restored to: no lamports, no data (reads as missing)."""
    return Account(0, b"", SYSTEM_PROGRAM_ID)


def _writable(message: Any, index: int) -> bool:
    header = message.header
    signers, keys = int(header.num_required_signatures), len(message.account_keys)
    if index < signers:
        return index < signers - int(header.num_readonly_signed_accounts)
    return index < keys - int(header.num_readonly_unsigned_accounts)


@dataclass(eq=False)
class Landed:
    """A transaction that executed: in the open slot until its block closes."""

    tx: VersionedTransaction
    slot: int
    meta: UiTransactionStatusMeta
    undo: list[tuple[Pubkey, Account | None]]
    keys: list[Pubkey]
    memo: str | None
    block: Block | None = None
    unit_price: int = 0  # micro-lamports per compute unit, for getRecentPrioritizationFees

    @property
    def signature(self) -> Signature:
        return self.tx.signatures[0]

    @property
    def err(self) -> Any:
        return self.meta.err


@dataclass(eq=False)
class Block:
    slot: int
    parent_slot: int
    blockhash: Hash
    previous_blockhash: Hash
    height: int
    time: int
    txs: list[Landed] = field(default_factory=list)


class LocalChain:
    """The ledger around LiteSVM: slots, blocks, commitment, history and forks. Thread-safe."""

    def __init__(self, *, finality_lag: int = 2) -> None:
        if finality_lag < 0:
            raise ValueError("finality_lag must be >= 0")
        self.finality_lag = finality_lag
        # Our blocks decide which blockhashes are valid and which signatures were seen.
        self.svm = LiteSVM().with_blockhash_check(False).with_transaction_history(0)
        self.lock = threading.RLock()
        self.genesis_time = int(time.time())
        genesis = Block(0, 0, Hash(os.urandom(32)), Hash.default(), 0, self.genesis_time)
        self.blocks: list[Block] = [genesis]
        self.by_slot: dict[int, Block] = {0: genesis}
        self.by_hash: dict[Hash, Block] = {genesis.blockhash: genesis}
        self.finalized: Block = genesis
        self.open_slot = 1
        self.open_txs: list[Landed] = []
        self.landed: dict[Signature, Landed] = {}
        self.by_address: dict[Pubkey, list[Landed]] = {}
        self.transaction_count = 0
        self.faucet = Keypair()
        self.svm.set_account(self.faucet.pubkey(), Account(FAUCET_LAMPORTS, b"", SYSTEM_PROGRAM_ID))
        self.sync_clock()

    # --- slots and blocks ------------------------------------------------------------------------

    @property
    def head(self) -> Block:
        return self.blocks[-1]

    def sync_clock(self) -> None:
        clock = self.svm.get_clock()
        clock.slot = self.open_slot
        clock.unix_timestamp = self._time(self.open_slot)
        self.svm.set_clock(clock)

    def _time(self, slot: int) -> int:
        return self.genesis_time + int(slot * SLOT_SECONDS)

    def close_block(self) -> Block:
        """Close the open slot into a block; finality follows ``finality_lag`` blocks behind."""
        with self.lock:
            parent = self.head
            slot = self.open_slot
            block = Block(
                slot,
                parent.slot,
                Hash.hash(bytes(parent.blockhash) + slot.to_bytes(8, "little")),
                parent.blockhash,
                parent.height + 1,
                self._time(slot),
                self.open_txs,
            )
            for landed in block.txs:
                landed.block, landed.slot = block, slot
            self.blocks.append(block)
            self.by_slot[slot], self.by_hash[block.blockhash] = block, block
            self.open_txs, self.open_slot = [], slot + 1
            if len(self.blocks) > self.finality_lag:
                candidate = self.blocks[-1 - self.finality_lag]
                if candidate.slot > self.finalized.slot:
                    self.finalized = candidate
            self.sync_clock()
            return block

    def advance(self, blocks: int = 1) -> int:
        with self.lock:
            for _ in range(blocks):
                self.close_block()
            return self.head.slot

    def skip_slots(self, slots: int = 1) -> int:
        """Slots whose leader produced nothing; open transactions move to the next produced block."""
        with self.lock:
            self.open_slot += slots
            for landed in self.open_txs:
                landed.slot = self.open_slot
            self.sync_clock()
            return self.open_slot

    def orphan(self, blocks: int) -> list[str]:
        """Drop the newest ``blocks`` unfinalized blocks and the open slot, undoing their effects."""
        with self.lock:
            unfinalized = [b for b in self.blocks if b.slot > self.finalized.slot]
            if blocks > len(unfinalized):
                raise RpcFailure(-32602, f"only {len(unfinalized)} unfinalized block(s) can be orphaned")
            dropped_blocks = self.blocks[len(self.blocks) - blocks :]
            dropped = [tx for block in dropped_blocks for tx in block.txs] + self.open_txs
            for landed in reversed(dropped):
                for key, account in reversed(landed.undo):
                    self.svm.set_account(key, account or _empty_account())
                del self.landed[landed.signature]
                for key in landed.keys:
                    history = self.by_address[key]
                    history.remove(landed)
            for block in dropped_blocks:
                self.blocks.remove(block)
                del self.by_slot[block.slot], self.by_hash[block.blockhash]
            self.open_txs = []
            return [str(tx.signature) for tx in dropped]

    def slot_at(self, commitment: str) -> int:
        if commitment == "processed":
            return self.open_slot
        return (self.finalized if commitment == "finalized" else self.head).slot

    def block_at(self, commitment: str) -> Block:
        return self.finalized if commitment == "finalized" else self.head

    def height_at(self, commitment: str) -> int:
        return self.head.height + 1 if commitment == "processed" else self.block_at(commitment).height

    def blockhash_valid(self, blockhash: Hash) -> bool:
        block = self.by_hash.get(blockhash)
        return block is not None and self.head.height + 1 <= block.height + MAX_PROCESSING_AGE

    def status_of(self, landed: Landed) -> str:
        if landed.block is None:
            return "processed"
        return "finalized" if landed.block.slot <= self.finalized.slot else "confirmed"

    def visible(self, landed: Landed, commitment: str) -> bool:
        """Whether a reader at ``commitment`` sees the transaction."""
        return COMMITMENTS.index(self.status_of(landed)) >= COMMITMENTS.index(commitment)

    # --- transactions ----------------------------------------------------------------------------

    def submit(self, tx: VersionedTransaction, *, preflight: bool = True) -> Signature:
        """Execute in the open slot, as sendTransaction does; preflight failures change nothing."""
        with self.lock:
            signature = tx.signatures[0]
            if signature in self.landed:
                if preflight:
                    raise _preflight_failure(TransactionErrorFieldless.AlreadyProcessed, [])
                return signature  # a duplicate the cluster drops
            if not self.blockhash_valid(tx.message.recent_blockhash):
                if preflight:
                    raise _preflight_failure(TransactionErrorFieldless.BlockhashNotFound, [])
                return signature  # dropped: it never lands
            message = tx.message
            keys = list(message.account_keys)
            if (self.svm.get_balance(keys[0]) or 0) < transaction_fee(message):
                if preflight:
                    raise _preflight_failure(TransactionErrorFieldless.InsufficientFundsForFee, [])
                return signature  # a leader drops what cannot pay its fee
            undo = [(key, self.svm.get_account(key)) for i, key in enumerate(keys) if _writable(message, i)]
            pre = [self.svm.get_balance(key) or 0 for key in keys]
            pre_tokens = self._token_balances(keys)
            result = self.svm.send_transaction(tx)
            if isinstance(result, FailedTransactionMetadata):
                executed = cast(Any, result.meta()).signature() == signature
                if preflight or not executed:
                    for key, account in reversed(undo):
                        self.svm.set_account(key, account or _empty_account())
                    raise _preflight_failure(result.err(), result.meta().logs())
                return self._land(tx, result.meta(), result.err(), undo, keys, pre, pre_tokens)
            return self._land(tx, result, None, undo, keys, pre, pre_tokens)

    def _land(
        self,
        tx: VersionedTransaction,
        result: TransactionMetadata,
        err: Any,
        undo: list[tuple[Pubkey, Account | None]],
        keys: list[Pubkey],
        pre: list[int],
        pre_tokens: list[UiTransactionTokenBalance],
    ) -> Signature:
        message = tx.message
        budget = compute_budget(message)
        self._charge(keys[0], budget.priority_fee)  # LiteSVM takes only the signatures' fee
        memos = [
            bytes(ix.data).decode(errors="replace")
            for ix in message.instructions
            if keys[ix.program_id_index] in MEMO_PROGRAMS
        ]
        return_data = cast(Any, result).return_data()
        meta = UiTransactionStatusMeta(
            err,
            transaction_fee(message),
            pre,
            [self.svm.get_balance(key) or 0 for key in keys],
            inner_instructions=_inner_instructions(result),
            log_messages=result.logs(),
            pre_token_balances=pre_tokens,
            post_token_balances=self._token_balances(keys),
            rewards=[],
            loaded_addresses=UiLoadedAddresses([], []),
            return_data=return_data if return_data.data else None,
            compute_units_consumed=result.compute_units_consumed(),
        )
        memo = "; ".join(f"[{len(text.encode())}] {text}" for text in memos) or None
        landed = Landed(
            tx, self.open_slot, meta, undo, list(dict.fromkeys(keys)), memo, None, budget.unit_price_micro_lamports
        )
        self.open_txs.append(landed)
        self.landed[landed.signature] = landed
        for key in landed.keys:
            self.by_address.setdefault(key, []).append(landed)
        self.transaction_count += 1
        return landed.signature

    def _token_balances(self, keys: list[Pubkey]) -> list[UiTransactionTokenBalance]:
        """The token accounts among a transaction's keys, with their amounts, for its meta."""
        balances = []
        for index, key in enumerate(keys):
            account = self.svm.get_account(key)
            token = None if account is None else tokens.token_account(account)
            if account is None or token is None:
                continue
            mint = tokens.mint(self.svm.get_account(token.mint))
            amount = tokens.ui_amount(token.amount, mint.decimals if mint else 0)
            balances.append(UiTransactionTokenBalance(index, token.mint, amount, token.owner, account.owner))
        return balances

    def _charge(self, payer: Pubkey, lamports: int) -> None:
        if lamports:
            account = self.svm.get_account(payer)
            assert account is not None  # it just paid the signatures' fee
            self.svm.set_account(
                payer, Account(account.lamports - lamports, account.data, account.owner, account.executable)
            )

    def prioritization_fees(self, writable: list[Pubkey], blocks: int = MAX_PROCESSING_AGE) -> list[tuple[int, int]]:
        """(slot, fee) for recent blocks: the lowest compute-unit price that landed in the block, raised to the
        lowest that landed writing each given account, as a validator's fee cache answers."""
        with self.lock:
            fees = []
            for block in self.blocks[-blocks:]:
                prices = [landed.unit_price for landed in block.txs]
                fee = min(prices, default=0)
                for account in writable:
                    writing = [
                        landed.unit_price
                        for landed in block.txs
                        if any(
                            key == account and _writable(landed.tx.message, i)
                            for i, key in enumerate(landed.tx.message.account_keys)
                        )
                    ]
                    fee = max(fee, min(writing, default=0))
                fees.append((block.slot, fee))
            return fees

    def airdrop(self, to: Pubkey, lamports: int) -> Signature:
        """A transfer from the faucet, so airdrops have signatures, blocks and forks like any transaction."""
        with self.lock:
            message = Message(
                [transfer(TransferParams(from_pubkey=self.faucet.pubkey(), to_pubkey=to, lamports=lamports))],
                self.faucet.pubkey(),
            )
            tx = VersionedTransaction.from_legacy(Transaction([self.faucet], message, self.head.blockhash))
            return self.submit(tx)

    def account(self, key: Pubkey) -> Account | None:
        with self.lock:
            account = self.svm.get_account(key)
        return None if account is None or account.lamports == 0 else account

    def accounts(self) -> list[Keyed]:
        """Every live account: LiteSVM cannot list them, but every one was a key of a landed transaction."""
        with self.lock:
            keyed = ((key, self.account(key)) for key in self.by_address)
            return [Keyed(key, account) for key, account in keyed if account is not None]


def _inner_instructions(result: TransactionMetadata) -> list[UiInnerInstructions]:
    """LiteSVM's inner instructions as the RPC shows them (solders' stubs call these methods attributes)."""
    inner = []
    for index, instructions in enumerate(result.inner_instructions()):
        compiled = []
        for item in instructions:
            instruction: Any = cast(Any, item).instruction()
            data = based58.b58encode(bytes(instruction.data)).decode()
            stack_height = cast(Any, item).stack_height()
            compiled.append(
                UiCompiledInstruction(instruction.program_id_index, bytes(instruction.accounts), data, stack_height)
            )
        if compiled:
            inner.append(UiInnerInstructions(index, compiled))
    return inner


def _preflight_failure(err: Any, logs: list[str]) -> RpcFailure:
    result = rpc.RpcSimulateTransactionResult(err, logs, None, 0, None)
    return RpcFailure(-32002, f"Transaction simulation failed: {err}", json.loads(result.to_json()))


# --- JSON-RPC ------------------------------------------------------------------------------------


def _result(response: Any) -> Any:
    """The ``result`` member of a solders response, as JSON data."""
    return json.loads(response.to_json())["result"]


def _options(params: list[Any], index: int) -> dict[str, Any]:
    value = params[index] if len(params) > index else None
    return value if isinstance(value, dict) else {}


def _pubkey(value: Any) -> Pubkey:
    try:
        return Pubkey.from_string(str(value))
    except ValueError as exc:
        raise RpcFailure(-32602, f"Invalid param: {exc}") from exc


def _signature(value: Any) -> Signature:
    try:
        return Signature.from_string(str(value))
    except ValueError as exc:
        raise RpcFailure(-32602, f"Invalid param: {exc}") from exc


def _commitment(options: dict[str, Any], default: str = "finalized", floor: str = "processed") -> str:
    commitment = options.get("commitment") or default
    if commitment not in COMMITMENTS:
        raise RpcFailure(-32602, f"Invalid commitment: {commitment}")
    return commitment if COMMITMENTS.index(commitment) >= COMMITMENTS.index(floor) else floor


def _transaction(encoded: Any, options: dict[str, Any]) -> VersionedTransaction:

    try:
        raw = (
            base64.b64decode(encoded, validate=True)
            if options.get("encoding") == "base64"
            else based58.b58decode(str(encoded).encode())
        )
        return VersionedTransaction.from_bytes(raw)
    except (ValueError, TypeError) as exc:
        raise RpcFailure(-32602, f"invalid transaction: {exc}") from exc


_METHODS: dict[str, Callable[[LocalRpc, list[Any]], Any]] = {}


def _method(name: str) -> Callable[[Callable[[LocalRpc, list[Any]], Any]], Callable[[LocalRpc, list[Any]], Any]]:
    """Register a JSON-RPC method under its Solana (camelCase) name."""

    def register(function: Callable[[LocalRpc, list[Any]], Any]) -> Callable[[LocalRpc, list[Any]], Any]:
        _METHODS[name] = function
        return function

    return register


class LocalRpc:
    """The JSON-RPC methods Roadie calls, answered from a :class:`LocalChain`."""

    def __init__(self, chain: LocalChain) -> None:
        self.chain = chain
        self.paused = threading.Event()
        self.fail_next: list[tuple[int, bytes]] = []  # HTTP statuses and bodies for the next requests

    def context(self, commitment: str = "processed") -> rpc.RpcResponseContext:
        return rpc.RpcResponseContext(self.chain.slot_at(commitment), api_version=VERSION)

    def call(self, method: str, params: list[Any]) -> Any:
        handler = _METHODS.get(method)
        if handler is None:
            raise RpcFailure(-32601, "Method not found")
        with self.chain.lock:
            return handler(self, params)

    # Cluster -------------------------------------------------------------------------------------

    @_method("getVersion")
    def get_version(self, params: list[Any]) -> Any:
        return _result(rpc.GetVersionResp(rpc.RpcVersionInfo(VERSION, 0)))

    @_method("getHealth")
    def get_health(self, params: list[Any]) -> Any:
        return "ok"

    @_method("getGenesisHash")
    def get_genesis_hash(self, params: list[Any]) -> Any:
        return str(self.chain.blocks[0].blockhash)

    @_method("getSlot")
    def get_slot(self, params: list[Any]) -> Any:
        return self.chain.slot_at(_commitment(_options(params, 0)))

    @_method("getBlockHeight")
    def get_block_height(self, params: list[Any]) -> Any:
        return self.chain.height_at(_commitment(_options(params, 0)))

    @_method("getEpochInfo")
    def get_epoch_info(self, params: list[Any]) -> Any:
        commitment = _commitment(_options(params, 0))
        slot, slots_per_epoch = self.chain.slot_at(commitment), 432_000
        return {
            "absoluteSlot": slot,
            "blockHeight": self.chain.height_at(commitment),
            "epoch": slot // slots_per_epoch,
            "slotIndex": slot % slots_per_epoch,
            "slotsInEpoch": slots_per_epoch,
            "transactionCount": self.chain.transaction_count,
        }

    @_method("getTransactionCount")
    def get_transaction_count(self, params: list[Any]) -> Any:
        return self.chain.transaction_count

    @_method("getLatestBlockhash")
    def get_latest_blockhash(self, params: list[Any]) -> Any:
        commitment = _commitment(_options(params, 0), floor="confirmed")
        block = self.chain.block_at(commitment)
        value = rpc.RpcBlockhash(block.blockhash, block.height + MAX_PROCESSING_AGE)
        return _result(rpc.GetLatestBlockhashResp(value, self.context(commitment)))

    @_method("isBlockhashValid")
    def is_blockhash_valid(self, params: list[Any]) -> Any:
        valid = self.chain.blockhash_valid(Hash.from_string(str(params[0])))
        return _result(cast(Any, rpc.IsBlockhashValidResp)(valid, self.context()))

    @_method("getMinimumBalanceForRentExemption")
    def get_minimum_balance_for_rent_exemption(self, params: list[Any]) -> Any:
        return self.chain.svm.minimum_balance_for_rent_exemption(int(params[0]))

    @_method("getFeeForMessage")
    def get_fee_for_message(self, params: list[Any]) -> Any:

        message = VersionedTransaction.from_bytes(b"\x00" + base64.b64decode(params[0])).message  # no signatures
        return _result(rpc.GetFeeForMessageResp(transaction_fee(message), self.context()))

    @_method("getRecentPrioritizationFees")
    def get_recent_prioritization_fees(self, params: list[Any]) -> Any:
        accounts = params[0] if params and isinstance(params[0], list) else []
        if len(accounts) > 128:
            raise RpcFailure(-32602, "Too many inputs provided; max 128")
        fees = self.chain.prioritization_fees([_pubkey(key) for key in accounts])
        return [{"slot": slot, "prioritizationFee": fee} for slot, fee in fees]

    # Accounts ------------------------------------------------------------------------------------

    @_method("getBalance")
    def get_balance(self, params: list[Any]) -> Any:
        account = self.chain.account(_pubkey(params[0]))
        return _result(rpc.GetBalanceResp(account.lamports if account else 0, self.context()))

    @_method("getAccountInfo")
    def get_account_info(self, params: list[Any]) -> Any:
        return _result(rpc.GetAccountInfoResp(self.chain.account(_pubkey(params[0])), self.context()))

    @_method("getMultipleAccounts")
    def get_multiple_accounts(self, params: list[Any]) -> Any:
        accounts = [self.chain.account(_pubkey(key)) for key in params[0]]
        return _result(rpc.GetMultipleAccountsResp(accounts, self.context()))

    @_method("getTokenAccountBalance")
    def get_token_account_balance(self, params: list[Any]) -> Any:
        account = self.chain.account(_pubkey(params[0]))
        token = None if account is None else tokens.token_account(account)
        if token is None:
            raise RpcFailure(-32602, "Invalid param: not a Token account")
        amount = tokens.ui_amount(token.amount, self._decimals(token.mint))
        return _result(rpc.GetTokenAccountBalanceResp(amount, self.context()))

    # Token and program accounts: what wallets, explorers and the spl-token CLI read ----------------

    def _decimals(self, mint: Pubkey) -> int:
        state = tokens.mint(self.chain.account(mint))
        return state.decimals if state else 0

    def _with_context(self, value: Any) -> dict[str, Any]:
        return {"context": tokens.json_data(self.context()), "value": value}

    def _token_accounts(self, params: list[Any], holder: Callable[[TokenAccount], Pubkey | None]) -> Any:
        """getTokenAccountsBy*: the token accounts whose owner (or delegate) is params[0], by mint or program."""
        who, which, options = _pubkey(params[0]), _options(params, 1), _options(params, 2)
        if len(which) != 1 or not {"mint", "programId"} >= which.keys():
            raise RpcFailure(-32602, "Invalid param: give exactly one of mint or programId")
        mint = _pubkey(which["mint"]) if "mint" in which else None
        program = _pubkey(which["programId"]) if "programId" in which else None
        if program is not None and program not in tokens.TOKEN_PROGRAMS:
            raise RpcFailure(-32602, "Invalid param: unrecognized Token program id")
        found = []
        for keyed in self.chain.accounts():
            token = tokens.token_account(keyed.account)
            if token is None or holder(token) != who or (mint is not None and token.mint != mint):
                continue
            if program is None or keyed.account.owner == program:
                found.append(keyed)
        return self._with_context(self._keyed_accounts(found, options.get("encoding") or "base64"))

    def _keyed_accounts(self, found: list[Keyed], encoding: str) -> list[Any]:
        decimals: dict[Pubkey, int] = {}
        for keyed in found:
            if (token := tokens.token_account(keyed.account)) is not None and token.mint not in decimals:
                decimals[token.mint] = self._decimals(token.mint)
        try:
            return [tokens.encoded(keyed, encoding, decimals) for keyed in found]
        except tokens.InvalidParamError as exc:
            raise RpcFailure(-32602, f"Invalid param: {exc}") from exc

    @_method("getTokenAccountsByOwner")
    def get_token_accounts_by_owner(self, params: list[Any]) -> Any:
        return self._token_accounts(params, lambda token: token.owner)

    @_method("getTokenAccountsByDelegate")
    def get_token_accounts_by_delegate(self, params: list[Any]) -> Any:
        return self._token_accounts(params, lambda token: token.delegate)

    def _mint_state(self, key: Pubkey) -> Mint:
        state = tokens.mint(self.chain.account(key))
        if state is None:
            raise RpcFailure(-32602, "Invalid param: not a Token mint")
        return state

    @_method("getTokenSupply")
    def get_token_supply(self, params: list[Any]) -> Any:
        state = self._mint_state(_pubkey(params[0]))
        return _result(rpc.GetTokenSupplyResp(tokens.ui_amount(state.supply, state.decimals), self.context()))

    @_method("getTokenLargestAccounts")
    def get_token_largest_accounts(self, params: list[Any]) -> Any:
        """The 20 largest accounts of a mint, largest first."""
        mint = _pubkey(params[0])
        decimals = self._mint_state(mint).decimals
        holders = [
            (token.amount, keyed.pubkey)
            for keyed in self.chain.accounts()
            if (token := tokens.token_account(keyed.account)) is not None and token.mint == mint
        ]
        holders.sort(key=lambda holder: (-holder[0], str(holder[1])))
        value = [rpc.RpcTokenAccountBalance(key, tokens.ui_amount(amount, decimals)) for amount, key in holders[:20]]
        return _result(rpc.GetTokenLargestAccountsResp(value, self.context()))

    @_method("getProgramAccounts")
    def get_program_accounts(self, params: list[Any]) -> Any:
        """The accounts a program owns, filtered by ``dataSize`` and ``memcmp``; ``withContext`` wraps them."""
        program, options = _pubkey(params[0]), _options(params, 1)
        filters = options.get("filters") or []
        if not isinstance(filters, list):
            raise RpcFailure(-32602, "Invalid param: filters must be a list")
        try:
            found = [
                keyed
                for keyed in self.chain.accounts()
                if keyed.account.owner == program and tokens.matches(keyed.account, filters)
            ]
        except tokens.InvalidParamError as exc:
            raise RpcFailure(-32602, f"Invalid param: {exc}") from exc
        value = self._keyed_accounts(found, options.get("encoding") or "base64")
        return self._with_context(value) if options.get("withContext") else value

    @_method("requestAirdrop")
    def request_airdrop(self, params: list[Any]) -> Any:
        return str(self.chain.airdrop(_pubkey(params[0]), int(params[1])))

    # Transactions --------------------------------------------------------------------------------

    @_method("sendTransaction")
    def send_transaction(self, params: list[Any]) -> Any:
        options = _options(params, 1)
        tx = _transaction(params[0], options)
        return str(self.chain.submit(tx, preflight=not options.get("skipPreflight", False)))

    @_method("simulateTransaction")
    def simulate_transaction(self, params: list[Any]) -> Any:
        options = _options(params, 1)
        tx = _transaction(params[0], options)
        if not options.get("replaceRecentBlockhash") and not self.chain.blockhash_valid(tx.message.recent_blockhash):
            value = rpc.RpcSimulateTransactionResult(TransactionErrorFieldless.BlockhashNotFound, [], None, 0)
            return _result(cast(Any, rpc.SimulateTransactionResp)(value, self.context()))
        if options.get("replaceRecentBlockhash"):
            tx = VersionedTransaction.populate(tx.message, tx.signatures)
        outcome = self.chain.svm.simulate_transaction(tx)
        if isinstance(outcome, FailedTransactionMetadata):
            meta, err = outcome.meta(), outcome.err()
        else:
            meta, err = outcome.meta(), None
        value = rpc.RpcSimulateTransactionResult(
            err, meta.logs(), None, meta.compute_units_consumed(), None, _inner_instructions(meta)
        )
        return _result(cast(Any, rpc.SimulateTransactionResp)(value, self.context()))

    @_method("getSignatureStatuses")
    def get_signature_statuses(self, params: list[Any]) -> Any:
        from solders.transaction_status import TransactionStatus

        search_history = bool(_options(params, 1).get("searchTransactionHistory"))
        statuses: list[TransactionStatus | None] = []
        for raw in params[0]:
            landed = self.chain.landed.get(_signature(raw))
            if landed is None or (not search_history and landed.slot < self.chain.open_slot - STATUS_CACHE_SLOTS):
                statuses.append(None)
                continue
            status = self.chain.status_of(landed)
            confirmations = None
            if status != "finalized":
                confirmations = 0 if landed.block is None else self.chain.head.height - landed.block.height
            level = getattr(TransactionConfirmationStatus, status.capitalize())
            statuses.append(TransactionStatus(landed.slot, confirmations, landed.err, landed.err, level))
        return _result(rpc.GetSignatureStatusesResp(statuses, self.context()))

    def _encoded(self, landed: Landed) -> EncodedTransactionWithStatusMeta:
        version = Legacy.Legacy if isinstance(landed.tx.version(), Legacy) else landed.tx.version()
        return EncodedTransactionWithStatusMeta(landed.tx, landed.meta, version)

    @_method("getTransaction")
    def get_transaction(self, params: list[Any]) -> Any:
        from solders.transaction_status import EncodedConfirmedTransactionWithStatusMeta

        commitment = _commitment(_options(params, 1), floor="confirmed")
        landed = self.chain.landed.get(_signature(params[0]))
        if landed is None or landed.block is None or not self.chain.visible(landed, commitment):
            return None
        value = EncodedConfirmedTransactionWithStatusMeta(landed.slot, self._encoded(landed), landed.block.time)
        return _result(rpc.GetTransactionResp(value))

    @_method("getSignaturesForAddress")
    def get_signatures_for_address(self, params: list[Any]) -> Any:
        options = _options(params, 1)
        commitment = _commitment(options, floor="confirmed")
        limit = int(options.get("limit") or 1000)
        if not 1 <= limit <= 1000:
            raise RpcFailure(-32602, "Invalid limit; max 1000")
        before = _signature(options["before"]) if options.get("before") else None
        until = _signature(options["until"]) if options.get("until") else None
        if before is not None and before not in self.chain.landed:
            return []
        found: list[rpc.RpcConfirmedTransactionStatusWithSignature] = []
        started = before is None
        for landed in reversed(self.chain.by_address.get(_pubkey(params[0]), [])):
            if not started:
                started = landed.signature == before
                continue
            if landed.signature == until or len(found) == limit:
                break
            if landed.block is None or not self.chain.visible(landed, commitment):
                continue
            found.append(
                rpc.RpcConfirmedTransactionStatusWithSignature(
                    landed.signature,
                    landed.slot,
                    landed.err,
                    landed.memo,
                    landed.block.time,
                    getattr(TransactionConfirmationStatus, self.chain.status_of(landed).capitalize()),
                )
            )
        return _result(rpc.GetSignaturesForAddressResp(found))

    # Blocks --------------------------------------------------------------------------------------

    def _block(self, slot: int, commitment: str) -> Block:
        newest = self.chain.block_at(commitment).slot
        if slot > newest:
            raise RpcFailure(-32004, f"Block not available for slot {slot}")
        block = self.chain.by_slot.get(slot)
        if block is None:
            raise RpcFailure(-32007, f"Slot {slot} was skipped, or missing due to ledger jump to recent snapshot")
        return block

    @_method("getBlock")
    def get_block(self, params: list[Any]) -> Any:
        options = _options(params, 1)
        block = self._block(int(params[0]), _commitment(options, floor="confirmed"))
        details = options.get("transactionDetails") or "full"  # null: the default, as on a validator
        value = UiConfirmedBlock(
            block.previous_blockhash,
            block.blockhash,
            block.parent_slot,
            transactions=[self._encoded(tx) for tx in block.txs] if details == "full" else None,
            signatures=[tx.signature for tx in block.txs] if details == "signatures" else None,
            rewards=[] if options.get("rewards", True) else None,
            block_time=block.time,
            block_height=block.height,
        )
        return _result(rpc.GetBlockResp(value))

    @_method("getBlockTime")
    def get_block_time(self, params: list[Any]) -> Any:
        return self._block(int(params[0]), "confirmed").time

    @_method("getBlocks")
    def get_blocks(self, params: list[Any]) -> Any:
        start = int(params[0])
        end_given = len(params) > 1 and isinstance(params[1], int)
        commitment = _commitment(_options(params, 2 if end_given else 1), floor="confirmed")
        end = min(int(params[1]) if end_given else 2**63, self.chain.block_at(commitment).slot)
        if end_given and end - start > 500_000:
            raise RpcFailure(-32602, "Slot range too large; max 500000")
        return [block.slot for block in self.chain.blocks if start <= block.slot <= end]

    # Test control (not part of Solana's API) -----------------------------------------------------

    def _status(self) -> dict[str, Any]:
        return {
            "processed": self.chain.open_slot,
            "confirmed": self.chain.head.slot,
            "finalized": self.chain.finalized.slot,
            "blockHeight": self.chain.head.height,
            "paused": self.paused.is_set(),
        }

    @_method("roadie_status")
    def roadie_status(self, params: list[Any]) -> Any:
        return self._status()

    @_method("roadie_advance")
    def roadie_advance(self, params: list[Any]) -> Any:
        self.chain.advance(int(params[0]) if params else 1)
        return self._status()

    @_method("roadie_skipSlot")
    def roadie_skip_slot(self, params: list[Any]) -> Any:
        self.chain.skip_slots(int(params[0]) if params else 1)
        return self._status()

    @_method("roadie_orphan")
    def roadie_orphan(self, params: list[Any]) -> Any:
        return {"dropped": self.chain.orphan(int(params[0]) if params else 1)} | self._status()

    @_method("roadie_pause")
    def roadie_pause(self, params: list[Any]) -> Any:
        self.paused.set()
        return self._status()

    @_method("roadie_resume")
    def roadie_resume(self, params: list[Any]) -> Any:
        self.paused.clear()
        return self._status()

    @_method("roadie_failNext")
    def roadie_fail_next(self, params: list[Any]) -> Any:
        """Answer the next ``count`` Solana requests with HTTP ``status`` (429, 503...) and ``body`` (by default
        a JSON object that is no JSON-RPC answer; with status 200, any garbage a broken endpoint might send)."""
        options = _options(params, 0)
        failure = (int(options.get("status", 503)), str(options.get("body", '{"error": "rehearsed failure"}')).encode())
        self.fail_next = [failure] * int(options.get("count", 1))
        return {"failing": len(self.fail_next)}

    def take_failure(self, method: str) -> tuple[int, bytes] | None:
        with self.chain.lock:
            if self.fail_next and not method.startswith("roadie_"):
                return self.fail_next.pop()
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: LocalRpc) -> None:
        super().__init__(address, _Handler)
        self.api = api


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: a busy worker makes thousands."""

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._reply(200, b"ok", "text/plain")
        else:
            self._reply(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        try:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        except ValueError:
            self._reply(200, json.dumps(_envelope(None, error={"code": -32700, "message": "Parse error"})).encode())
            return
        calls = request if isinstance(request, list) else [request]
        first = calls[0].get("method", "") if calls and isinstance(calls[0], dict) else ""
        failure = self.server.api.take_failure(str(first))
        if failure is not None:
            self._reply(*failure)
            return
        answers = [self._answer(call) for call in calls]
        self._reply(200, json.dumps(answers if isinstance(request, list) else answers[0]).encode())

    def _answer(self, call: Any) -> dict[str, Any]:
        if not isinstance(call, dict) or not isinstance(call.get("method"), str):
            return _envelope(None, error={"code": -32600, "message": "Invalid request"})
        params = call.get("params") or []
        try:
            return _envelope(call.get("id"), result=self.server.api.call(call["method"], list(params)))
        except RpcFailure as exc:
            return _envelope(call.get("id"), error=exc.body())
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            return _envelope(call.get("id"), error={"code": -32602, "message": f"Invalid params: {exc}"})


def _envelope(request_id: Any, *, result: Any = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
    if error is not None:
        body["error"] = error
    else:
        body["result"] = result
    return body


# The state on disk --------------------------------------------------------------------------------
# One JSON file, so a restart of ``roadie up`` finds the NFTs its database remembers: every account a
# transaction touched, the blocks, every landed transaction with its meta (history, and undo data for
# forks), the slot counters and the faucet. Written atomically (a temporary file, then a rename).

STATE_FORMAT = 1


def _state_b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _state_account(encoded: str | None) -> Account | None:
    return None if encoded is None else Account.from_bytes(base64.b64decode(encoded))


def _landed_state(landed: Landed) -> dict[str, Any]:
    return {
        "tx": _state_b64(bytes(landed.tx)),
        "slot": landed.slot,
        "meta": landed.meta.to_json(),
        "undo": [[str(key), None if account is None else _state_b64(bytes(account))] for key, account in landed.undo],
        "keys": [str(key) for key in landed.keys],
        "memo": landed.memo,
        "unit_price": landed.unit_price,
    }


def save_state(chain: LocalChain, path: Path) -> None:
    """Write the chain's state to ``path`` atomically."""
    with chain.lock:
        state = {
            "format": STATE_FORMAT,
            "genesis_time": chain.genesis_time,
            "faucet": _state_b64(bytes(chain.faucet)),
            "finalized": chain.finalized.slot,
            "open_slot": chain.open_slot,
            "transaction_count": chain.transaction_count,
            "blocks": [
                {
                    "slot": block.slot,
                    "parent_slot": block.parent_slot,
                    "blockhash": str(block.blockhash),
                    "previous_blockhash": str(block.previous_blockhash),
                    "height": block.height,
                    "time": block.time,
                }
                for block in chain.blocks
            ],
            "landed": [_landed_state(landed) for landed in chain.landed.values()],
            "accounts": {str(key): _state_b64(bytes(account)) for key, account in _live_accounts(chain)},
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.write_text(json.dumps(state))
    os.replace(scratch, path)


def _live_accounts(chain: LocalChain) -> list[tuple[Pubkey, Account]]:
    keys = [*chain.by_address, chain.faucet.pubkey()]
    accounts = ((key, chain.svm.get_account(key)) for key in dict.fromkeys(keys))
    return [(key, account) for key, account in accounts if account is not None]


class StateFileError(ValueError):
    """The state file cannot be read back whole: the chain does not start on half of it."""


def load_state(path: Path, *, finality_lag: int) -> LocalChain:
    """A chain in the state ``path`` holds; a file of another format, or a damaged one, is refused."""
    try:
        state = json.loads(path.read_text())
        if state.get("format") != STATE_FORMAT:
            raise StateFileError(f"it holds format {state.get('format')!r}, not {STATE_FORMAT}")
        return _restored(state, finality_lag)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StateFileError(
            f"{path} is not a local-chain state this version can read ({exc}); move it aside to start a new chain"
        ) from None


def _restored(state: dict[str, Any], finality_lag: int) -> LocalChain:
    chain = LocalChain(finality_lag=finality_lag)
    chain.genesis_time = state["genesis_time"]
    chain.faucet = Keypair.from_bytes(base64.b64decode(state["faucet"]))
    for key, encoded in state["accounts"].items():
        chain.svm.set_account(Pubkey.from_string(key), Account.from_bytes(base64.b64decode(encoded)))
    chain.blocks = [
        Block(
            b["slot"],
            b["parent_slot"],
            Hash.from_string(b["blockhash"]),
            Hash.from_string(b["previous_blockhash"]),
            b["height"],
            b["time"],
        )
        for b in state["blocks"]
    ]
    chain.by_slot = {block.slot: block for block in chain.blocks}
    chain.by_hash = {block.blockhash: block for block in chain.blocks}
    chain.finalized = chain.by_slot[state["finalized"]]
    chain.open_slot, chain.transaction_count = state["open_slot"], state["transaction_count"]
    chain.landed, chain.by_address, chain.open_txs = {}, {}, []
    for saved in state["landed"]:
        landed = Landed(
            VersionedTransaction.from_bytes(base64.b64decode(saved["tx"])),
            saved["slot"],
            UiTransactionStatusMeta.from_json(saved["meta"]),
            [(Pubkey.from_string(key), _state_account(account)) for key, account in saved["undo"]],
            [Pubkey.from_string(key) for key in saved["keys"]],
            saved["memo"],
            chain.by_slot.get(saved["slot"]),
            saved["unit_price"],
        )
        chain.landed[landed.signature] = landed
        (landed.block.txs if landed.block is not None else chain.open_txs).append(landed)
        for key in landed.keys:
            chain.by_address.setdefault(key, []).append(landed)
    chain.sync_clock()
    return chain


@dataclass
class Localnet:
    """The local chain served on ``host:port``, producing a block every ``slot_ms`` (0: on request only)."""

    host: str = "127.0.0.1"
    port: int = 8899
    slot_ms: int = 400
    finality_lag: int = 2
    chain: LocalChain = field(init=False)
    api: LocalRpc = field(init=False)
    #: Where the chain's state is kept across restarts (None: in memory only).
    state_path: Path | None = None
    _server: _Server | None = None
    stopping: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.state_path is not None and self.state_path.exists():
            self.chain = load_state(self.state_path, finality_lag=self.finality_lag)
            log.info("localnet.restored", extra={"path": str(self.state_path), "slot": self.chain.head.slot})
        else:
            self.chain = LocalChain(finality_lag=self.finality_lag)
        self.api = LocalRpc(self.chain)

    def save(self) -> None:
        """Write the state to ``state_path``, if it has one."""
        if self.state_path is not None:
            save_state(self.chain, self.state_path)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Localnet:
        self._server = _Server((self.host, self.port), self.api)
        self.port = self._server.server_address[1]
        self._threads = [threading.Thread(target=self._server.serve_forever, name="localnet-rpc", daemon=True)]
        if self.slot_ms > 0:
            self._threads.append(threading.Thread(target=self._produce, name="localnet-blocks", daemon=True))
        for thread in self._threads:
            thread.start()
        log.info(
            "localnet.started", extra={"url": self.url, "slot_ms": self.slot_ms, "finality_lag": self.finality_lag}
        )
        return self

    def _produce(self) -> None:
        saved_at, saved_count = time.monotonic(), self.chain.transaction_count
        while not self.stopping.wait(self.slot_ms / 1000):
            if not self.api.paused.is_set():
                self.chain.close_block()
            # Written only when a transaction landed since: empty blocks are not worth a rewrite.
            if time.monotonic() - saved_at >= SAVE_EVERY_S and self.chain.transaction_count != saved_count:
                saved_count = self.chain.transaction_count
                self.save()
                saved_at = time.monotonic()

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self.save()


@contextmanager
def running_localnet(**options: Any) -> Iterator[Localnet]:
    localnet = Localnet(**options).start()
    try:
        yield localnet
    finally:
        localnet.stop()


def serve(
    *, host: str, port: int | None, slot_ms: int | None, finality_lag: int | None, provision: bool, state: Path | None
) -> int:
    """``roadie localnet``: serve until SIGINT/SIGTERM; provisions the platform's accounts first if asked."""
    import asyncio
    import signal
    from urllib.parse import urlsplit

    from roadie.chain.client import connect
    from roadie.chain.platform import provision as provision_platform

    settings = get_settings()
    localnet = Localnet(
        host=host,
        port=port if port is not None else urlsplit(settings.solana_rpc_url).port or 8899,
        slot_ms=settings.localnet_slot_ms if slot_ms is None else slot_ms,
        finality_lag=settings.localnet_finality_lag if finality_lag is None else finality_lag,
        state_path=state,
    ).start()
    signal.signal(signal.SIGTERM, lambda *_: localnet.stopping.set())
    try:
        if provision:

            async def work() -> None:
                async with connect(settings, localnet.url) as chain:
                    print(await provision_platform(chain, settings), flush=True)

            asyncio.run(work())
        print(f"local Solana chain on {localnet.url} (a block every {localnet.slot_ms} ms)", flush=True)
        with suppress(KeyboardInterrupt):
            localnet.stopping.wait()
    finally:
        localnet.stop()
    return 0


def rpc_answers(url: str) -> bool:
    """Whether a Solana JSON-RPC endpoint answers getHealth at ``url``."""
    import httpx

    try:
        response = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "getHealth"}, timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def embedded_chain_wanted(settings: Settings) -> bool:
    """``roadie up``/``demo`` start the local chain when the RPC URL is the default one and nothing answers it."""
    default = Settings.model_fields["solana_rpc_urls"].default
    return bool(settings.solana_rpc_urls == default and not rpc_answers(settings.solana_rpc_url))


def start_embedded_chain(settings: Settings, env: dict[str, str], timeout_s: float = 60) -> ProcessGroup:
    """``roadie localnet`` as a supervised process, returned once it has provisioned the platform's accounts."""
    import sys

    logs = settings.home.resolve() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    state = settings.home.resolve() / "localnet" / "state.json"
    command = [sys.executable, "-m", "roadie.cli", "localnet", "--state", str(state)]
    process = ProcessGroup("localnet", command, logs / "localnet.log", env=env)
    process.start()
    deadline = time.monotonic() + timeout_s
    while "local Solana chain on" not in process.log():
        if not process.alive or time.monotonic() > deadline:
            process.stop()
            raise RuntimeError(f"the local Solana chain did not start; see {process.log_path}")
        time.sleep(0.2)
    return process
