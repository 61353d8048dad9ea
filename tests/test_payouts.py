"""Payout transfers: batches recorded once, packed under the size limit, paid exactly once, re-runnable."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import MintToParams, get_associated_token_address, mint_to
from sqlalchemy import func, select, text, update

from models.chain import ChainSend, PayoutBatch, PayoutTransfer
from models.platform import Job
from roadie.chain.client import connect
from roadie.chain.platform import platform_keypair, reward_mint, treasury
from roadie.chain.sending import MAX_TRANSACTION_BYTES, send_and_confirm
from roadie.chain.transfers import create_batch
from roadie.db import transaction
from roadie.settings import get_settings
from tests.conftest import Processes
from tests.fixtures.chain import StallingProxy, crashing_worker, recover_from_crash
from tests.helpers import wait_for_job

pytestmark = pytest.mark.usefixtures("chain_running")


def record(key: str, transfers: list[tuple[str, int]]) -> tuple[str, str]:
    """A batch recorded as the ledger records it; returns (batch id, job id)."""
    with transaction() as session:
        batch_id = create_batch(session, key, transfers)
    with transaction() as session:
        job_id = session.get_one(PayoutBatch, batch_id).job_id
    return str(batch_id), str(job_id)


def balance(wallet: Pubkey) -> int:
    account = get_associated_token_address(wallet, reward_mint(), TOKEN_PROGRAM_ID)

    async def work() -> int:
        async with AsyncClient(get_settings().solana_rpc_url) as client:
            found = await client.get_account_info(account)
            if found.value is None:
                return 0
            return int((await client.get_token_account_balance(account)).value.amount)

    return asyncio.run(work())


def rows(batch_id: str) -> tuple[PayoutBatch, list[PayoutTransfer], list[ChainSend]]:
    with transaction() as session:
        batch = session.get_one(PayoutBatch, batch_id)
        transfers = list(batch.transfers)
        sends = list(session.scalars(select(ChainSend).where(ChainSend.batch_id == batch_id)))
        return batch, transfers, sends


def wallets(n: int) -> list[Pubkey]:
    return [Keypair().pubkey() for _ in range(n)]


@pytest.mark.usefixtures("worker")
def test_a_batch_pays_every_recipient_once_with_the_batch_id_in_a_memo(admin: httpx.Client) -> None:
    recipients = wallets(3)
    amounts = [1_500_000, 20_000_000, 7]
    batch_id, job_id = record("rewards:test-basic", [(str(w), a) for w, a in zip(recipients, amounts, strict=True)])

    job = wait_for_job(admin, job_id, "succeeded", timeout=90)

    assert job["result"]["status"] == "finalized"
    assert [balance(w) for w in recipients] == amounts
    batch, transfers, sends = rows(batch_id)
    assert batch.status == "finalized"
    assert batch.total == sum(amounts)
    assert {t.status for t in transfers} == {"finalized"}
    assert all(t.signature and t.instruction_index is not None and t.slot for t in transfers)
    assert [s.status for s in sends] == ["finalized"]

    async def history() -> Any:
        async with AsyncClient(get_settings().solana_rpc_url) as client:
            return (await client.get_signatures_for_address(treasury(), limit=20, commitment=Confirmed)).value

    memos = {str(e.signature): e.memo for e in asyncio.run(history())}
    assert memos[sends[0].signature] == f"[{len('roadie:payout:') + 36}] roadie:payout:{batch_id}"


@pytest.mark.usefixtures("worker")
def test_recording_a_batch_again_with_its_key_returns_the_same_batch(admin: httpx.Client) -> None:
    (recipient,) = wallets(1)
    first, job_id = record("royalties:once", [(str(recipient), 10)])

    second, _ = record("royalties:once", [(str(recipient), 10_000)])
    wait_for_job(admin, job_id, "succeeded", timeout=90)

    assert first == second
    assert balance(recipient) == 10
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(Job).where(Job.type == "chain.transfer_batch")) == 1


def test_amounts_to_one_wallet_are_added_up_and_bad_recipients_are_refused(new_wallet: Keypair) -> None:
    off_curve = str(get_associated_token_address(new_wallet.pubkey(), new_wallet.pubkey()))
    wallet = str(new_wallet.pubkey())

    for bad, reason in [
        ([(off_curve, 5)], "off the ed25519 curve"),
        ([("11111111111111111111111111111111", 5)], "the System Program"),
        ([("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA", 5)], "the SPL Token program"),
        ([("0OIl" * 11, 5)], "base58"),
        ([(wallet, 0)], "greater than 0"),
        ([(wallet, 2**64)], "less than or equal to"),
        ([], "at least one transfer"),
    ]:
        with pytest.raises(ValueError, match=reason), transaction() as session:
            create_batch(session, "rewards:bad", bad)
    batch_id, _ = record("rewards:summed", [(wallet, 5), (wallet, 7)])

    _, (transfer,), _ = rows(batch_id)
    assert transfer.amount == 12


@pytest.mark.usefixtures("worker")
def test_a_large_batch_is_packed_into_several_transactions_under_the_size_limit(admin: httpx.Client) -> None:
    recipients = wallets(24)
    batch_id, job_id = record("rewards:large", [(str(w), 1_000 + i) for i, w in enumerate(recipients)])

    wait_for_job(admin, job_id, "succeeded", timeout=120)

    assert [balance(w) for w in recipients] == [1_000 + i for i in range(24)]
    _, transfers, sends = rows(batch_id)
    assert len(sends) > 1
    assert all(len(s.signed_transaction) <= MAX_TRANSACTION_BYTES for s in sends)
    assert len({(t.signature, t.instruction_index) for t in transfers}) == 24


def top_up_treasury(amount: int) -> None:
    platform = platform_keypair()

    async def work() -> None:
        async with connect() as chain:
            instruction = mint_to(MintToParams(TOKEN_PROGRAM_ID, reward_mint(), treasury(), platform.pubkey, amount))
            await send_and_confirm(chain, [instruction], [platform.signer])

    asyncio.run(work())


def treasury_balance() -> int:
    async def work() -> int:
        async with AsyncClient(get_settings().solana_rpc_url) as client:
            return int((await client.get_token_account_balance(treasury(), Confirmed)).value.amount)

    return asyncio.run(work())


@pytest.mark.usefixtures("worker")
def test_a_treasury_short_of_funds_fails_the_batch_before_sending_and_a_rerun_pays_once(admin: httpx.Client) -> None:
    recipients = wallets(2)
    held = treasury_balance()
    batch_id, job_id = record("rewards:too-much", [(str(recipients[0]), 1), (str(recipients[1]), held)])

    job = wait_for_job(admin, job_id, "failed", timeout=90)

    assert job["error"]["code"] == "treasury_insufficient_funds"
    batch, transfers, sends = rows(batch_id)
    assert (batch.status, batch.error_code) == ("failed", "treasury_insufficient_funds")
    assert {t.status for t in transfers} == {"pending"}
    assert sends == []
    assert [balance(w) for w in recipients] == [0, 0]

    top_up_treasury(10**12)
    assert admin.post(f"/v1/admin/jobs/{job_id}/retry").status_code == 202
    wait_for_job(admin, job_id, "succeeded", timeout=90)
    assert admin.post(f"/v1/admin/jobs/{job_id}/retry", json={"force": True}).status_code == 202
    wait_for_job(admin, job_id, "succeeded", timeout=90)

    assert [balance(w) for w in recipients] == [1, held]
    assert rows(batch_id)[0].status == "finalized"
    assert len(rows(batch_id)[2]) == 1


def test_a_batch_stalled_on_the_rpc_holds_no_lock_on_its_row(admin: httpx.Client, own_workers: Processes) -> None:
    recipients = wallets(2)
    with StallingProxy() as proxy:
        proxy.stall()
        own_workers.worker(
            queues="chain", env={"ROADIE_SOLANA_RPC_URL": proxy.url, "ROADIE_SOLANA_RPC_TIMEOUT_S": "300"}
        )
        batch_id, job_id = record("rewards:stalled", [(str(w), 300) for w in recipients])
        proxy.wait_held()

        with transaction() as session:  # another session writes the batch row at once
            session.execute(text("SET LOCAL lock_timeout = '2s'"))
            session.execute(update(PayoutBatch).where(PayoutBatch.id == batch_id).values(error_code=None))
        assert admin.get(f"/v1/jobs/{job_id}").json()["status"] == "running"

        proxy.resume()
        wait_for_job(admin, job_id, "succeeded", timeout=90)

    assert [balance(w) for w in recipients] == [300, 300]
    assert len(rows(batch_id)[2]) == 1


@pytest.mark.parametrize("point", ["before_send", "after_send", "after_confirm"])
def test_a_worker_killed_while_paying_a_batch_pays_everyone_exactly_once(
    admin: httpx.Client, own_workers: Processes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, point: str
) -> None:
    doomed = crashing_worker(own_workers, monkeypatch, point, tmp_path / "crashed")
    recipients = wallets(3)
    _, job_id = record(f"rewards:crash-{point}", [(str(w), 5_000) for w in recipients])

    recover_from_crash(own_workers, doomed)

    job = wait_for_job(admin, job_id, "succeeded", timeout=120)
    assert job["attempts"] == 2
    assert [balance(w) for w in recipients] == [5_000] * 3
