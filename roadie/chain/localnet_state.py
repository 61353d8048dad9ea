"""The local chain's state on disk, so a restart of ``roadie up`` finds the NFTs its database remembers.

One JSON file: every account a transaction touched, the blocks, every landed transaction with
its meta (history for ``getSignaturesForAddress``/``getTransaction``, undo data for forks), the
slot counters and the faucet. Written atomically (a temporary file, then a rename) every few
seconds and at shutdown; a crash loses at most the last few seconds, as a crashed validator
loses what it had not flushed.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from solders.account import Account
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from solders.transaction_status import UiTransactionStatusMeta

from roadie.chain.localnet import Block, Landed, LocalChain

FORMAT = 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _account(encoded: str | None) -> Account | None:
    return None if encoded is None else Account.from_bytes(base64.b64decode(encoded))


def _landed(landed: Landed) -> dict[str, Any]:
    return {
        "tx": _b64(bytes(landed.tx)),
        "slot": landed.slot,
        "meta": landed.meta.to_json(),
        "undo": [[str(key), None if account is None else _b64(bytes(account))] for key, account in landed.undo],
        "keys": [str(key) for key in landed.keys],
        "memo": landed.memo,
        "unit_price": landed.unit_price,
    }


def save(chain: LocalChain, path: Path) -> None:
    """Write the chain's state to ``path`` atomically."""
    with chain.lock:
        state = {
            "format": FORMAT,
            "genesis_time": chain.genesis_time,
            "faucet": _b64(bytes(chain.faucet)),
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
            "landed": [_landed(landed) for landed in chain.landed.values()],
            "accounts": {str(key): _b64(bytes(account)) for key, account in _live_accounts(chain)},
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


def load(path: Path, *, finality_lag: int) -> LocalChain:
    """A chain in the state ``path`` holds; a file of another format, or a damaged one, is refused."""
    try:
        state = json.loads(path.read_text())
        if state.get("format") != FORMAT:
            raise StateFileError(f"it holds format {state.get('format')!r}, not {FORMAT}")
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
            [(Pubkey.from_string(key), _account(account)) for key, account in saved["undo"]],
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
