"""RPC failover: two front ends over one local chain, the preferred one killed mid-run.

The workers and the indexer are given ``ROADIE_SOLANA_RPC_URLS=<proxy>,<chain>``: every request goes through
the proxy (a second RPC front end over the same chain) until it dies; then they carry on through the chain's
own front end. Nothing is sent twice, and the indexer neither skips nor double-counts.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from sqlalchemy import func, select

from models import ChainEvent, IndexedTransaction
from models.chain import ChainSend, PayoutBatch
from models.music import Nft
from roadie.chain.platform import platform_keypair
from roadie.db import transaction
from roadie.processes import ProcessGroup, beat_command
from roadie.settings import get_settings
from tests.conftest import ROOT, Processes
from tests.fixtures.chain import StallingProxy, mintable_track
from tests.helpers import wait_for_job
from tests.test_nft_mint import assert_minted_once, mint
from tests.test_payouts import balance, record
from tests.test_payouts import rows as payout_rows

pytestmark = pytest.mark.usefixtures("chain_running")
T = TypeVar("T")


def wait_until(check: Callable[[], T], what: str, timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def finalized_mints(track_ids: list[str]) -> int:
    with transaction() as session:
        query = select(func.count()).select_from(Nft).where(Nft.track_id.in_(track_ids), Nft.status == "finalized")
        return int(session.scalar(query) or 0)


def platform_signatures_since(slot: int) -> dict[str, int]:
    """Every transaction of the platform address on chain from ``slot`` on, with its slot."""

    async def work() -> dict[str, int]:
        async with AsyncClient(get_settings().solana_rpc_url) as client:
            found = await client.get_signatures_for_address(platform_keypair().pubkey, limit=1000, commitment=Confirmed)
            return {str(entry.signature): entry.slot for entry in found.value if entry.slot >= slot}

    return asyncio.run(work())


def indexed_finalized(signatures: set[str]) -> set[str]:
    with transaction() as session:
        found = session.scalars(
            select(IndexedTransaction.signature).where(
                IndexedTransaction.signature.in_(signatures), IndexedTransaction.status == "finalized"
            )
        )
        return set(found)


def test_mints_payouts_and_the_indexer_carry_on_when_one_of_two_rpc_front_ends_dies(
    client: httpx.Client, admin: httpx.Client, own_workers: Processes, tmp_path: Path
) -> None:
    track_ids = [mintable_track(str(Keypair().pubkey())) for _ in range(6)]
    fans = [Keypair().pubkey() for _ in range(3)]
    with StallingProxy() as preferred, ticking_indexer(tmp_path):
        urls = f"{preferred.url},{get_settings().solana_rpc_url}"
        env = {"ROADIE_SOLANA_RPC_URLS": urls, "ROADIE_SOLANA_RPC_UNHEALTHY_S": "60"}
        payer = own_workers.worker(queues="chain", concurrency=2, env=env)
        indexer = own_workers.worker(queues="indexer", env=env)
        jobs = [mint(client, track_id) for track_id in track_ids]
        wait_until(lambda: finalized_mints(track_ids) >= 1, "the first mint finalized through the preferred end")
        batch_id, batch_job = record(f"rewards:{uuid.uuid4()}", [(str(f), 1_000 + n) for n, f in enumerate(fans)])
        before_kill = finalized_mints(track_ids)
        preferred.kill()  # mid-run: the other mints and the payout are still to be sent or followed

        done = [wait_for_job(client, job["id"], "succeeded", timeout=120) for job in jobs]
        paid = wait_for_job(admin, batch_job, "succeeded", timeout=120)

        assert before_kill < len(track_ids)
        nfts = [assert_minted_once(track_id, job) for track_id, job in zip(track_ids, done, strict=True)]
        with transaction() as session:  # failover never made a job rebuild: one journaled transaction per mint
            assert session.scalar(
                select(func.count()).select_from(ChainSend).where(ChainSend.nft_id.in_([n.id for n in nfts]))
            ) == len(nfts)
        assert paid["result"]["status"] == "finalized"
        assert [balance(fan) for fan in fans] == [1_000, 1_001, 1_002]  # each paid once
        _, _, sends = payout_rows(batch_id)
        assert {send.status for send in sends} == {"finalized"}

        # The indexer read every platform transaction from the run's first on, each once, to finalized.
        ours = {nft.signature for nft in nfts} | {send.signature for send in sends}
        first_slot = min(nft.slot or 0 for nft in nfts)
        on_chain = set(platform_signatures_since(first_slot))
        assert ours <= on_chain
        wait_until(lambda: indexed_finalized(on_chain) == on_chain, "the indexer finalizing every transaction", 60)

    with transaction() as session:
        amounts = session.scalars(
            select(ChainEvent.amount).where(
                ChainEvent.signature.in_([send.signature for send in sends]), ChainEvent.kind == "token_transfer"
            )
        ).all()
        batch = session.get_one(PayoutBatch, batch_id)
    assert sorted(amount or 0 for amount in amounts) == [1_000, 1_001, 1_002]
    assert batch.status == "finalized"
    # Both moved on from the dead front end (endpoint 1). Checked last: on a busy machine the indexer may
    # start only after the kill, and its first read after it is what passes endpoint 1 over.
    for process in (payer, indexer):
        assert '"chain.rpc_endpoint_unhealthy"' in process.log()
        assert '"endpoint": 1' in process.log()


@contextmanager
def ticking_indexer(tmp_path: Path) -> Iterator[None]:
    """A beat of the test's own that sends ``indexer.tick`` every 0.3 s while the block runs."""
    schedule = {"ROADIE_SCHEDULE_INDEXER_TICK": "every 0.3s"}
    beat = ProcessGroup(
        "beat", beat_command(tmp_path / "schedule"), tmp_path / "beat.log", cwd=ROOT, env=os.environ | schedule
    ).start()
    try:
        yield
    finally:
        beat.stop()


class _Garbage(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"<html><body>502 Bad Gateway</body></html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@contextmanager
def garbage_endpoint() -> Iterator[str]:
    """An HTTP server that answers every JSON-RPC request with 200 and an HTML page, as a broken gateway does."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_endpoint_answering_garbage_fails_the_job_with_a_clear_code_and_alongside_a_good_one_is_passed_over(
    client: httpx.Client, own_workers: Processes
) -> None:
    track_id = mintable_track(str(Keypair().pubkey()))
    fast_retries = {
        "ROADIE_SOLANA_RPC_ATTEMPTS": "1",
        "ROADIE_RETRY_BACKOFF_BASE_S": "0.05",
        "ROADIE_RETRY_BACKOFF_MAX_S": "0.1",
    }
    with garbage_endpoint() as garbage:
        alone = own_workers.worker(queues="chain", env=fast_retries | {"ROADIE_SOLANA_RPC_URLS": garbage})
        failed = wait_for_job(client, mint(client, track_id)["id"], "failed", timeout=120)
        alone.stop()

        assert failed["error"]["code"] == "rpc_bad_answer"
        assert "endpoint 1 answered something that is not a JSON-RPC response" in failed["error"]["message"]
        assert "127.0.0.1" not in failed["error"]["message"]
        assert "job.unexpected_error" not in alone.log()
        with transaction() as session:  # it failed before journaling: nothing was signed, nothing is pending
            assert (
                session.scalar(
                    select(func.count())
                    .select_from(ChainSend)
                    .join(Nft, Nft.id == ChainSend.nft_id)
                    .where(Nft.track_id == track_id)
                )
                == 0
            )

        urls = f"{garbage},{get_settings().solana_rpc_url}"
        own_workers.worker(queues="chain", env={"ROADIE_SOLANA_RPC_URLS": urls})
        done = wait_for_job(client, mint(client, track_id)["id"], "succeeded", timeout=120)

    assert_minted_once(track_id, done)
