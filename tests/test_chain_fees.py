"""The platform's transactions carry a compute budget and a priority fee, and record what they paid.

Every mint and payout transaction starts with ``SetComputeUnitLimit`` (its simulated units times
the margin) and ``SetComputeUnitPrice`` (a percentile of recent fees for the accounts it writes,
between a floor and a ceiling); the fee it paid (``meta.fee``) is kept on its journal row and
exported per mint and per payout batch. Against the real local chain, which charges fees as a
cluster does.
"""

from __future__ import annotations

import math
import time
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from solana.rpc.commitment import Confirmed
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.keypair import Keypair
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction
from sqlalchemy import select

from models.chain import ChainSend, PayoutBatch
from models.music import Nft
from roadie.chain.client import connect
from roadie.chain.fees import compute_budget, transaction_fee
from roadie.chain.platform import platform_keypair
from roadie.chain.sending import send_and_confirm
from roadie.chain.transfers import create_batch
from roadie.db import transaction
from roadie.settings import Settings
from tests.conftest import Processes, free_port
from tests.fixtures.chain import RewritingProxy, control, dropped_send, mintable_track, on_chain
from tests.helpers import metric_samples, metric_value, wait_for_job

pytestmark = pytest.mark.usefixtures("chain_running")

FLOOR = 1_000  # the default ROADIE_CHAIN_PRIORITY_FEE_FLOOR_MICRO_LAMPORTS
MARGIN = 1.2  # the default ROADIE_CHAIN_COMPUTE_UNIT_MARGIN
#: Job retries without waiting, for tests where every attempt is bound to fail the same way.
QUICK_RETRIES = {"ROADIE_RETRY_BACKOFF_BASE_S": "0.05", "ROADIE_RETRY_BACKOFF_MAX_S": "0.1"}


def mint(client: httpx.Client, track_id: str) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"type": "nft.mint", "payload": {"track_id": track_id}})
    assert response.status_code == 202, response.text
    return dict(response.json())


def sends_of(track_id: str) -> list[ChainSend]:
    with transaction() as session:
        nft = session.scalars(select(Nft).where(Nft.track_id == track_id)).one_or_none()
        if nft is None:
            return []
        return list(session.scalars(select(ChainSend).where(ChainSend.nft_id == nft.id).order_by(ChainSend.created_at)))


def landed_meta(signature: str) -> Any:
    found = on_chain(
        lambda c: c.get_transaction(
            Signature.from_string(signature), commitment=Confirmed, max_supported_transaction_version=0
        )
    ).value
    assert found is not None
    assert found.transaction.meta is not None
    return found.transaction.meta


def scrape(port: int) -> Any:
    deadline = time.monotonic() + 30
    while True:
        try:
            return metric_samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text)
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "the worker's metrics did not come up"
            time.sleep(0.2)


def assert_budgeted_and_charged(send: ChainSend, units_price: int = FLOOR) -> int:
    """The transaction's budget is its simulated units times the margin at ``units_price``; returns its fee."""
    message = VersionedTransaction.from_bytes(send.signed_transaction).message
    budget = compute_budget(message)
    meta = landed_meta(send.signature)
    assert budget.unit_limit == math.ceil(meta.compute_units_consumed * MARGIN)
    assert budget.unit_price_micro_lamports == units_price
    assert send.fee_lamports == meta.fee == transaction_fee(message)
    assert send.fee_lamports > 5_000 * message.header.num_required_signatures  # a priority fee was paid
    return send.fee_lamports


def test_a_mint_carries_a_budget_from_its_simulation_and_its_fee_is_recorded_and_exported(
    client: httpx.Client, own_workers: Processes, new_wallet: Keypair
) -> None:
    port = free_port()
    own_workers.worker(queues="chain", env={"ROADIE_WORKER_METRICS_PORT": str(port)})
    track_id = mintable_track(str(new_wallet.pubkey()))

    job = wait_for_job(client, mint(client, track_id)["id"], {"succeeded", "failed"}, timeout=90)

    assert job["status"] == "succeeded", job["error"]
    (send,) = sends_of(track_id)
    fee = assert_budgeted_and_charged(send)
    samples = scrape(port)
    assert metric_value(samples, "roadie_chain_fee_lamports_count", purpose="nft_mint") == 1
    assert metric_value(samples, "roadie_chain_fee_lamports_sum", purpose="nft_mint") == fee


def test_a_payout_batch_pays_a_budgeted_fee_per_transaction_and_exports_the_batch_total(
    admin: httpx.Client, own_workers: Processes
) -> None:
    port = free_port()
    own_workers.worker(queues="chain", env={"ROADIE_WORKER_METRICS_PORT": str(port)})
    recipients = [str(Keypair().pubkey()) for _ in range(30)]  # more than one transaction holds
    with transaction() as session:
        batch_id = create_batch(session, f"fees-{recipients[0]}", [(wallet, 1_000) for wallet in recipients])
        job_id = str(session.get_one(PayoutBatch, batch_id).job_id)

    job = wait_for_job(admin, job_id, {"succeeded", "failed"}, timeout=120)

    assert job["status"] == "succeeded", job["error"]
    with transaction() as session:
        sends = list(session.scalars(select(ChainSend).where(ChainSend.batch_id == batch_id)))
    assert len(sends) >= 2
    total = sum(assert_budgeted_and_charged(send) for send in sends)
    samples = scrape(port)
    assert metric_value(samples, "roadie_chain_fee_lamports_count", purpose="payout") == 1
    assert metric_value(samples, "roadie_chain_fee_lamports_sum", purpose="payout") == total


def test_a_fee_estimate_above_the_ceiling_is_clamped_to_the_ceiling_and_logged(
    client: httpx.Client, own_workers: Processes, new_wallet: Keypair
) -> None:
    ceiling = 50_000
    worker = own_workers.worker(
        queues="chain",
        env={
            "ROADIE_CHAIN_PRIORITY_FEE_PERCENTILE": "100",
            "ROADIE_CHAIN_PRIORITY_FEE_CEILING_MICRO_LAMPORTS": str(ceiling),
        },
    )
    platform = platform_keypair()
    surge = [  # someone paid 2,000,000 micro-lamports a unit to write the platform's account
        set_compute_unit_limit(10_000),
        set_compute_unit_price(2_000_000),
        transfer(TransferParams(from_pubkey=platform.pubkey, to_pubkey=Keypair().pubkey(), lamports=1_000_000)),
    ]

    async def pay_the_surge(_: Any) -> None:
        async with connect() as chain:
            await send_and_confirm(chain, surge, [platform.signer])

    on_chain(pay_the_surge)
    track_id = mintable_track(str(new_wallet.pubkey()))

    job = wait_for_job(client, mint(client, track_id)["id"], {"succeeded", "failed"}, timeout=90)

    assert job["status"] == "succeeded", job["error"]
    (send,) = sends_of(track_id)
    assert_budgeted_and_charged(send, units_price=ceiling)
    assert '"event": "chain.priority_fee_clamped"' in worker.log()
    assert '"estimate_micro_lamports": 2000000' in worker.log()


def test_a_floor_above_the_ceiling_is_refused_at_start_up() -> None:
    with pytest.raises(ValidationError, match="FLOOR_MICRO_LAMPORTS is above"):
        Settings(chain_priority_fee_floor_micro_lamports=2_000, chain_priority_fee_ceiling_micro_lamports=1_000)


@pytest.mark.parametrize(
    ("method", "garbage"),
    [
        ("getRecentPrioritizationFees", {"result": [{"slot": "soon", "prioritizationFee": -1}]}),
        ("simulateTransaction", {"result": {"context": {"slot": 1}, "value": "fine, trust me"}}),
    ],
)
def test_an_rpc_answering_garbage_for_fees_or_simulation_fails_the_job_with_nothing_journaled_or_sent(
    client: httpx.Client, own_workers: Processes, new_wallet: Keypair, method: str, garbage: dict[str, Any]
) -> None:
    with RewritingProxy({method: lambda _: garbage}) as proxy:
        own_workers.worker(queues="chain", env={"ROADIE_SOLANA_RPC_URL": proxy.url} | QUICK_RETRIES)
        track_id = mintable_track(str(new_wallet.pubkey()))

        job = wait_for_job(client, mint(client, track_id)["id"], {"succeeded", "failed"}, timeout=120)

    assert job["status"] == "failed"
    assert job["error"]["code"] == "rpc_bad_answer"
    assert method in job["error"]["message"]
    assert job["attempts"] == job["max_attempts"]  # retried, as another try may get a proper answer
    assert sends_of(track_id) == []
    assert proxy.calls.get("sendTransaction", 0) == 0


def test_an_unreadable_fee_of_a_landed_mint_is_left_unknown_and_the_mint_finishes(
    client: httpx.Client, own_workers: Processes, new_wallet: Keypair
) -> None:
    with RewritingProxy({"getTransaction": lambda _: {"result": {"meta": "none of your business"}}}) as proxy:
        worker = own_workers.worker(queues="chain", env={"ROADIE_SOLANA_RPC_URL": proxy.url})
        track_id = mintable_track(str(new_wallet.pubkey()))

        job = wait_for_job(client, mint(client, track_id)["id"], {"succeeded", "failed"}, timeout=90)

    assert job["status"] == "succeeded", job["error"]
    (send,) = sends_of(track_id)
    assert (send.status, send.fee_lamports) == ("finalized", None)
    assert '"event": "chain.fee_unreadable"' in worker.log()
    assert landed_meta(send.signature).fee > 10_000  # it was paid all the same


def test_a_lost_transaction_is_signed_again_only_once_the_chain_is_past_its_last_valid_height(
    client: httpx.Client, own_workers: Processes, new_wallet: Keypair
) -> None:
    """The budget changes nothing in the send-once journal: the chain's own block height decides expiry."""
    track_id = mintable_track(str(new_wallet.pubkey()))
    control("roadie_pause")  # the chain's clock moves only when the test moves it
    with RewritingProxy({"sendTransaction": dropped_send}) as proxy:  # every send is lost on the way
        own_workers.worker(queues="chain", env={"ROADIE_SOLANA_RPC_URL": proxy.url})
        job = mint(client, track_id)
        deadline = time.monotonic() + 60
        while proxy.calls.get("sendTransaction", 0) < 1:
            assert time.monotonic() < deadline, "the mint transaction was not sent"
            time.sleep(0.1)
        (first,) = sends_of(track_id)

        # Past its last valid height at confirmed, not yet at finalized (two blocks behind): it might still land.
        height = control("roadie_status")["blockHeight"]
        control("roadie_advance", first.last_valid_block_height + 1 - height)
        sent = proxy.calls["sendTransaction"]
        while proxy.calls["sendTransaction"] < sent + 2:  # the worker looked twice more and sent the same bytes
            assert time.monotonic() < deadline + 60, "the worker stopped re-sending"
            time.sleep(0.1)
        assert [s.signature for s in sends_of(track_id)] == [first.signature]

        proxy.answers.clear()  # sends get through from now on
        control("roadie_advance", 2)  # finalized passes its last valid height: it can never land
        while len(sends_of(track_id)) < 2:
            assert time.monotonic() < deadline + 120, "no new transaction was built after expiry"
            time.sleep(0.1)
        control("roadie_resume")
        job = wait_for_job(client, job["id"], {"succeeded", "failed"}, timeout=90)

    assert job["status"] == "succeeded", job["error"]
    expired, landed = sends_of(track_id)
    assert (expired.signature, expired.status) == (first.signature, "expired")
    assert landed.status == "finalized"
    assert landed.last_valid_block_height > first.last_valid_block_height
    assert_budgeted_and_charged(landed)
    assert on_chain(lambda c: c.get_signature_statuses([Signature.from_string(first.signature)], True)).value == [None]
