"""The local chain answers solana-py over HTTP like a validator: commitment, history, skipped slots, forks."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed, Finalized, Processed
from solana.rpc.core import RPCException
from solana.rpc.types import TxOpts
from solders.keypair import Keypair
from solders.message import Message
from solders.rpc.errors import BlockNotAvailableMessage, SlotSkippedMessage
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from roadie.settings import get_settings
from tests.fixtures.chain import control, funded, on_chain


@pytest.fixture
def paused(localnet: Any) -> Iterator[Any]:
    """Block production stopped: the test closes blocks itself with roadie_advance."""
    control("roadie_pause")
    yield localnet
    control("roadie_resume")


def payment(sender: Keypair, lamports: int = 1_000) -> VersionedTransaction:
    blockhash = on_chain(lambda c: c.get_latest_blockhash(Confirmed)).value.blockhash
    to = Keypair().pubkey()
    message = Message.new_with_blockhash(
        [transfer(TransferParams(from_pubkey=sender.pubkey(), to_pubkey=to, lamports=lamports))],
        sender.pubkey(),
        blockhash,
    )
    return VersionedTransaction(message, [sender])


def send(tx: VersionedTransaction) -> Any:
    return on_chain(lambda c: c.send_raw_transaction(bytes(tx), TxOpts(skip_confirmation=True))).value


def status(tx: VersionedTransaction) -> Any:
    return on_chain(lambda c: c.get_signature_statuses([tx.signatures[0]], search_transaction_history=True)).value[0]


def level(tx: VersionedTransaction) -> str | None:
    found = status(tx)
    return None if found is None else str(found.confirmation_status).rsplit(".", 1)[-1].lower()


def test_a_transaction_goes_from_processed_to_confirmed_to_finalized(paused: Any) -> None:
    sender = funded()
    control("roadie_advance", 1)
    tx = payment(sender)

    send(tx)
    assert level(tx) == "processed"
    assert on_chain(lambda c: c.get_transaction(tx.signatures[0], "base64", Confirmed)).value is None

    control("roadie_advance", 1)
    assert level(tx) == "confirmed"
    found = on_chain(lambda c: c.get_transaction(tx.signatures[0], "base64", Confirmed, 0)).value
    assert found is not None
    assert found.transaction.transaction.signatures[0] == tx.signatures[0]
    assert on_chain(lambda c: c.get_transaction(tx.signatures[0], "base64", Finalized)).value is None

    control("roadie_advance", 2)  # the finality lag
    assert level(tx) == "finalized"
    assert status(tx).confirmations is None
    assert on_chain(lambda c: c.get_slot(Finalized)).value == found.slot


def test_resending_the_same_signed_bytes_never_executes_twice(paused: Any) -> None:
    sender = funded()
    control("roadie_advance", 1)
    tx = payment(sender, lamports=5_000)
    send(tx)
    balance = on_chain(lambda c: c.get_balance(sender.pubkey(), Processed)).value

    with pytest.raises(RPCException, match="AlreadyProcessed"):
        send(tx)
    assert on_chain(lambda c: c.get_balance(sender.pubkey(), Processed)).value == balance


def test_a_blockhash_expires_after_150_blocks(paused: Any) -> None:
    sender = funded()
    control("roadie_advance", 1)
    tx = payment(sender)
    last_valid = on_chain(lambda c: c.get_latest_blockhash(Confirmed)).value.last_valid_block_height

    control("roadie_advance", 150)

    assert on_chain(lambda c: c.get_block_height(Confirmed)).value >= last_valid
    with pytest.raises(RPCException, match="BlockhashNotFound"):
        send(tx)
    assert status(tx) is None


def test_skipped_and_future_slots_answer_like_a_validator(paused: Any) -> None:
    before = control("roadie_status")
    control("roadie_skipSlot", 2)
    after = control("roadie_advance", 3)  # past the finality lag: getBlock reads finalized blocks
    skipped = before["processed"]

    with pytest.raises(RPCException) as skipped_error:
        on_chain(lambda c: c.get_block(skipped, "base64", 0))
    with pytest.raises(RPCException) as future_error:
        on_chain(lambda c: c.get_block(after["processed"] + 5, "base64", 0))

    assert isinstance(skipped_error.value.args[0], SlotSkippedMessage)
    assert isinstance(future_error.value.args[0], BlockNotAvailableMessage)
    blocks = on_chain(lambda c: c.get_blocks(skipped - 1, after["finalized"])).value
    assert blocks == [skipped - 1, skipped + 2]
    block = on_chain(lambda c: c.get_block(skipped + 2, "base64", 0)).value
    assert block.parent_slot == skipped - 1


def test_orphaning_unfinalized_blocks_removes_their_transactions_and_effects(paused: Any) -> None:
    sender = funded()
    control("roadie_advance", 3)
    balance = on_chain(lambda c: c.get_balance(sender.pubkey())).value
    tx = payment(sender, lamports=250_000_000)
    send(tx)
    control("roadie_advance", 1)
    assert level(tx) == "confirmed"

    dropped = control("roadie_orphan", 1)

    assert str(tx.signatures[0]) in dropped["dropped"]
    assert status(tx) is None
    assert on_chain(lambda c: c.get_balance(sender.pubkey(), Processed)).value == balance
    history = on_chain(lambda c: c.get_signatures_for_address(sender.pubkey(), commitment=Confirmed)).value
    assert tx.signatures[0] not in [entry.signature for entry in history]
    # Its blockhash is still valid on the surviving fork: the same bytes land again.
    send(tx)
    control("roadie_advance", 1)
    assert level(tx) == "confirmed"


def test_finalized_blocks_cannot_be_orphaned(paused: Any) -> None:
    control("roadie_advance", 3)

    with pytest.raises(RuntimeError, match="unfinalized"):
        control("roadie_orphan", 3)


def test_signatures_for_an_address_page_newest_first_with_before_until_and_limit(paused: Any) -> None:
    sender = funded()
    control("roadie_advance", 1)
    sent = []
    for _ in range(5):
        tx = payment(sender)
        send(tx)
        sent.append(tx.signatures[0])
        control("roadie_advance", 1)
    control("roadie_advance", 2)
    newest_first = list(reversed(sent))

    first = on_chain(lambda c: c.get_signatures_for_address(sender.pubkey(), limit=2)).value
    second = on_chain(
        lambda c: c.get_signatures_for_address(sender.pubkey(), before=first[-1].signature, limit=2)
    ).value
    until = on_chain(lambda c: c.get_signatures_for_address(sender.pubkey(), until=sent[1])).value

    assert [e.signature for e in first] == newest_first[:2]
    assert [e.signature for e in second] == newest_first[2:4]
    assert [e.signature for e in until] == newest_first[:3]
    assert all(e.block_time and e.slot for e in first)


def test_a_memo_shows_in_the_signature_history(paused: Any) -> None:
    from spl.memo.constants import MEMO_PROGRAM_ID
    from spl.memo.instructions import MemoParams, create_memo

    sender = funded()
    control("roadie_advance", 1)
    blockhash = on_chain(lambda c: c.get_latest_blockhash(Confirmed)).value.blockhash
    memo = create_memo(MemoParams(MEMO_PROGRAM_ID, sender.pubkey(), b"roadie:payout:test"))
    tx = VersionedTransaction(Message.new_with_blockhash([memo], sender.pubkey(), blockhash), [sender])
    send(tx)
    control("roadie_advance", 1)

    (entry, *_) = on_chain(lambda c: c.get_signatures_for_address(sender.pubkey(), commitment=Confirmed)).value

    assert entry.memo == "[18] roadie:payout:test"


def test_failing_requests_on_demand_rehearses_a_rate_limiting_endpoint(localnet: Any) -> None:
    control("roadie_failNext", {"status": 429, "count": 1})

    with pytest.raises(SolanaRpcException):
        on_chain(lambda c: c.get_slot())
    assert on_chain(lambda c: c.get_slot()).value > 0


def test_roadie_localnet_serves_a_provisioned_chain_until_sigterm(tmp_path: Path) -> None:
    from roadie.chain.keys import load_keypair
    from roadie.chain.localnet import embedded_chain_wanted, rpc_answers
    from roadie.chain.platform import reward_mint
    from roadie.processes import ProcessGroup
    from tests.conftest import ROOT, free_port

    url = f"http://127.0.0.1:{free_port()}"
    keypair_path = tmp_path / "platform.json"
    env = os.environ | {"ROADIE_KEYPAIR_PATH": str(keypair_path), "ROADIE_SOLANA_RPC_URL": url}
    chain = ProcessGroup("localnet", [sys.executable, "-m", "roadie.cli", "localnet"], tmp_path / "log", env, ROOT)
    chain.start()
    try:
        deadline = time.monotonic() + 60
        while "local Solana chain on" not in chain.log():
            assert chain.alive, chain.log()
            assert time.monotonic() < deadline, chain.log()
            time.sleep(0.2)
        settings = get_settings().model_copy(update={"solana_rpc_urls": [url], "keypair_path": keypair_path})
        platform, mint = load_keypair(keypair_path).pubkey, reward_mint(settings)

        async def look() -> tuple[int, Any]:
            async with AsyncClient(url) as client:
                return (await client.get_balance(platform)).value, (await client.get_account_info(mint)).value

        balance, mint_account = asyncio.run(look())
        assert rpc_answers(url)
        assert not embedded_chain_wanted(settings)  # not the default URL, and something answers
        assert balance > 0
        assert mint_account is not None
    finally:
        chain.stop()
    assert not rpc_answers(url)
