"""nft.mint: a Token-2022 NFT per track, minted exactly once whatever crashes when."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from spl.token.constants import TOKEN_2022_PROGRAM_ID
from spl.token.instructions import get_associated_token_address
from sqlalchemy import func, select, text, update

from models.chain import ChainSend
from models.music import Nft
from roadie.chain.client import connect
from roadie.chain.nft import MintedNft, read_mint
from roadie.chain.platform import platform_keypair
from roadie.db import transaction
from roadie.settings import get_settings
from tests.conftest import Processes
from tests.fixtures.chain import StallingProxy, control, crashing_worker, mintable_track, recover_from_crash
from tests.helpers import wait_for_job

pytestmark = pytest.mark.usefixtures("chain_running")


def submit_mint(client: httpx.Client, payload: dict[str, Any]) -> httpx.Response:
    return client.post("/v1/jobs", json={"type": "nft.mint", "payload": payload})


def mint(client: httpx.Client, track_id: str, **extra: Any) -> dict[str, Any]:
    response = submit_mint(client, {"track_id": track_id, **extra})
    assert response.status_code == 202, response.text
    return dict(response.json())


def on_chain(mint_address: str) -> MintedNft | None:
    async def work() -> MintedNft | None:
        async with connect() as chain:
            return await read_mint(chain, Pubkey.from_string(mint_address))

    return asyncio.run(work())


def signatures_of(address: str) -> list[str]:
    async def work() -> list[str]:
        async with AsyncClient(get_settings().solana_rpc_url) as client:
            found = await client.get_signatures_for_address(Pubkey.from_string(address), commitment=Confirmed)
            return [str(entry.signature) for entry in found.value]

    return asyncio.run(work())


def processed(signature: str) -> bool:
    from solders.signature import Signature

    async def work() -> bool:
        async with AsyncClient(get_settings().solana_rpc_url) as client:
            found = await client.get_signature_statuses([Signature.from_string(signature)])
            return found.value[0] is not None

    return asyncio.run(work())


def token_balance(owner: Pubkey, mint_address: str) -> str:
    account = get_associated_token_address(owner, Pubkey.from_string(mint_address), TOKEN_2022_PROGRAM_ID)

    async def work() -> str:
        async with AsyncClient(get_settings().solana_rpc_url) as client:
            return (await client.get_token_account_balance(account)).value.amount

    return asyncio.run(work())


def minted_rows(track_id: str) -> tuple[list[Nft], list[ChainSend]]:
    with transaction() as session:
        nfts = list(session.scalars(select(Nft).where(Nft.track_id == track_id)))
        sends = list(session.scalars(select(ChainSend).where(ChainSend.nft_id.in_([n.id for n in nfts]))))
        return nfts, sends


def assert_minted_once(track_id: str, job: dict[str, Any]) -> Nft:
    (nft,), sends = minted_rows(track_id)
    landed = [s for s in sends if s.status in ("confirmed", "finalized")]
    assert len(landed) == 1
    assert [s.status for s in sends if s not in landed] == ["expired"] * (len(sends) - 1)
    assert nft.status == "finalized"
    assert nft.signature == landed[0].signature
    assert job["result"]["mint"] == nft.mint_address
    assert nft.mint_address is not None
    assert signatures_of(nft.mint_address) == [nft.signature]  # one transaction ever touched the mint
    minted = on_chain(nft.mint_address)
    assert minted is not None
    assert minted.supply == 1
    return nft


@pytest.mark.usefixtures("worker")
def test_a_track_is_minted_as_a_token_2022_nft_whose_metadata_points_at_its_pinned_json(
    client: httpx.Client, new_wallet: Keypair
) -> None:
    track_id = mintable_track(str(new_wallet.pubkey()), title="Night Drive", isrc="USRC17607839")

    job = wait_for_job(client, mint(client, track_id)["id"], "succeeded", timeout=90)

    result = job["result"]
    assert result["status"] == "finalized"
    assert result["owner"] == str(new_wallet.pubkey())
    assert result["uri"].startswith("ipfs://bafkrei")
    minted = on_chain(result["mint"])
    assert minted is not None
    assert minted.mint_authority is None  # supply fixed at one
    assert minted.metadata is not None
    assert minted.metadata.name == "Night Drive"
    assert minted.metadata.symbol == "ROADIE"
    assert minted.metadata.uri == result["uri"]
    assert minted.metadata.update_authority == platform_keypair().pubkey
    assert minted.metadata.additional["isrc"] == "USRC17607839"
    assert minted.metadata.additional["track_id"] == track_id
    assert minted.metadata.additional["artist"].startswith("artist-")
    assert token_balance(new_wallet.pubkey(), result["mint"]) == "1"
    nft = assert_minted_once(track_id, job)
    assert (nft.owner_wallet, nft.slot, nft.metadata_uri) == (result["owner"], result["slot"], result["uri"])


@pytest.mark.usefixtures("worker")
def test_minting_an_already_minted_track_again_changes_nothing(
    client: httpx.Client, admin: httpx.Client, new_wallet: Keypair
) -> None:
    track_id = mintable_track(str(new_wallet.pubkey()))
    first = wait_for_job(client, mint(client, track_id)["id"], "succeeded", timeout=90)

    again = wait_for_job(client, mint(client, track_id)["id"], "succeeded", timeout=90)
    admin.post(f"/v1/admin/jobs/{first['id']}/retry", json={"force": True})
    rerun = wait_for_job(client, first["id"], "succeeded", timeout=90)

    assert again["result"] == first["result"] == rerun["result"]
    assert_minted_once(track_id, rerun)


@pytest.mark.parametrize("point", ["before_send", "after_send", "after_confirm"])
def test_a_worker_killed_at_any_point_of_a_mint_leaves_exactly_one_mint(
    client: httpx.Client,
    own_workers: Processes,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    new_wallet: Keypair,
    point: str,
) -> None:
    doomed = crashing_worker(own_workers, monkeypatch, point, tmp_path / "crashed")
    track_id = mintable_track(str(new_wallet.pubkey()))
    job = mint(client, track_id)

    recover_from_crash(own_workers, doomed)

    job = wait_for_job(client, job["id"], "succeeded", timeout=120)
    assert job["attempts"] == 2
    assert_minted_once(track_id, job)


def test_concurrent_duplicate_mint_jobs_for_one_track_mint_once(
    client: httpx.Client, own_workers: Processes, new_wallet: Keypair
) -> None:
    own_workers.worker(queues="chain", concurrency=2)
    own_workers.worker(queues="chain", concurrency=2)
    track_id = mintable_track(str(new_wallet.pubkey()))

    jobs = [mint(client, track_id) for _ in range(4)]
    done = [wait_for_job(client, job["id"], "succeeded", timeout=120) for job in jobs]

    assert len({job["result"]["mint"] for job in done}) == 1
    assert_minted_once(track_id, done[0])


def test_a_mint_stalled_on_the_rpc_holds_no_lock_on_its_nft_row(
    client: httpx.Client, own_workers: Processes, new_wallet: Keypair
) -> None:
    track_id = mintable_track(str(new_wallet.pubkey()))
    with StallingProxy() as proxy:
        proxy.stall()
        own_workers.worker(
            queues="chain", env={"ROADIE_SOLANA_RPC_URL": proxy.url, "ROADIE_SOLANA_RPC_TIMEOUT_S": "300"}
        )
        stalled = mint(client, track_id)
        proxy.wait_held()

        own_workers.worker(queues="chain")  # a worker whose RPC answers mints the same track meanwhile
        done = wait_for_job(client, mint(client, track_id)["id"], "succeeded", timeout=90)
        assert client.get(f"/v1/jobs/{stalled['id']}").json()["status"] == "running"
        with transaction() as session:  # and the row can be written at once
            session.execute(text("SET LOCAL lock_timeout = '2s'"))
            touched = session.scalars(
                update(Nft).where(Nft.track_id == track_id).values(owner_wallet=Nft.owner_wallet).returning(Nft.id)
            ).all()
        assert len(touched) == 1

        proxy.resume()
        stalled = wait_for_job(client, stalled["id"], "succeeded", timeout=90)

    assert stalled["result"] == done["result"]
    assert_minted_once(track_id, done)


@pytest.mark.usefixtures("worker")
def test_a_transaction_lost_with_its_expired_blockhash_is_rebuilt_for_the_same_mint(
    client: httpx.Client, new_wallet: Keypair
) -> None:
    track_id = mintable_track(str(new_wallet.pubkey()))
    control("roadie_pause")
    job = mint(client, track_id)
    deadline = time.monotonic() + 60
    while not (sends := minted_rows(track_id)[1]) or not processed(sends[0].signature):
        assert time.monotonic() < deadline, "the mint transaction was not sent"
        time.sleep(0.1)
    control("roadie_advance", 1)
    control("roadie_orphan", 1)  # a fork drops its block
    control("roadie_skipSlot", 1)
    control("roadie_advance", 160)  # its blockhash expires before it can be re-sent
    control("roadie_resume")

    job = wait_for_job(client, job["id"], "succeeded", timeout=120)

    nft = assert_minted_once(track_id, job)
    _, sends = minted_rows(track_id)
    assert nft.mint_address == job["result"]["mint"]
    assert len(sends) in (1, 2)  # re-sent in time, or rebuilt after expiry: never two mints


def test_bad_owners_and_oversized_metadata_are_refused_with_422(client: httpx.Client, new_wallet: Keypair) -> None:
    track_id = "8c4f2a4e-9a3b-4d5e-8f60-0b1c2d3e4f50"
    program_derived = str(get_associated_token_address(new_wallet.pubkey(), new_wallet.pubkey()))
    cases = {
        "owner": ({"owner": "0OIl" * 11}, "base58"),
        "owner ": ({"owner": program_derived}, "off the ed25519 curve"),
        "name": ({"name": "x" * 33}, "32 UTF-8 bytes"),
        "symbol": ({"symbol": "é" * 6}, "10 UTF-8 bytes"),
    }
    for field, (extra, reason) in cases.items():
        response = submit_mint(client, {"track_id": track_id, **extra})
        assert response.status_code == 422, field
        (problem,) = response.json()["error"]["fields"]
        assert problem["field"] == f"payload.{field.strip()}"
        assert reason in problem["reason"]


@pytest.mark.usefixtures("worker")
def test_a_track_whose_metadata_is_not_pinned_fails_with_a_clear_code(
    client: httpx.Client, new_wallet: Keypair
) -> None:
    track_id = mintable_track(str(new_wallet.pubkey()), pinned=False)

    job = wait_for_job(client, mint(client, track_id)["id"], "failed", timeout=60)

    assert job["error"]["code"] == "metadata_not_pinned"
    assert minted_rows(track_id) == ([], [])


@pytest.mark.usefixtures("worker")
def test_a_rate_limiting_rpc_is_retried_with_backoff(client: httpx.Client, new_wallet: Keypair) -> None:
    track_id = mintable_track(str(new_wallet.pubkey()))
    control("roadie_failNext", {"status": 429, "count": 6})

    job = wait_for_job(client, mint(client, track_id)["id"], "succeeded", timeout=120)

    assert_minted_once(track_id, job)


@pytest.mark.usefixtures("worker")
def test_an_rpc_that_stays_down_fails_the_job_with_the_rpc_error(client: httpx.Client, new_wallet: Keypair) -> None:
    track_id = mintable_track(str(new_wallet.pubkey()))
    control("roadie_failNext", {"status": 503, "count": 10_000})
    try:
        job = wait_for_job(client, mint(client, track_id)["id"], "failed", timeout=180)
    finally:
        control("roadie_failNext", {"count": 0})

    assert job["error"]["code"] == "rpc_unavailable"
    assert "HTTP 503" in job["error"]["message"]
    assert job["attempts"] == 8
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(ChainSend)) == 0
