"""The chain indexer's throughput against the raw ``getTransaction`` fetch rate for the same signatures.

    python -m bench.indexer [--transactions 2000]

Set-up (not timed): the local chain runs as its own process (``roadie localnet``, a block every 100 ms,
finality two blocks behind); N memo transactions signed by the platform keypair are sent and waited for until
finalized, so the indexer has a backlog of N (+ the provisioning transactions) on the platform address.

Baseline: this process lists the signatures, then fetches every one with ``getTransaction`` (base64,
``confirmed``) through solana-py's ``AsyncClient`` with as many requests in flight as the indexer keeps
(``ROADIE_INDEXER_FETCH_CONCURRENCY``), and nothing else: no decoding, no database.

Roadie: ONE indexer worker (``-Q indexer --concurrency 1``, default page and batch sizes) is started and
pinged (start-up excluded); t0 is sending one ``indexer.tick``; the clock stops when every transaction is in
``indexed_transactions`` (polled every 20 ms). The tick pages ``getSignaturesForAddress``, fetches and
decodes each transaction and commits each batch of rows, events and the cursor in one transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass

from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed, Finalized
from solders.signature import Signature

from bench.common import Bench, Row, database_connection, free_port, print_table, run_main, sql_count, wait_until
from roadie.processes import POOLS

POLL_S = 0.02
TIMEOUT_S = 300.0
INDEXED = "SELECT count(*) FROM indexed_transactions"


@dataclass(frozen=True)
class Side:
    transactions: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.transactions / self.seconds


async def _send_memos(count: int) -> None:
    """``count`` memo transactions from the platform, sent without waiting, then waited for until finalized."""
    from spl.memo.constants import MEMO_PROGRAM_ID
    from spl.memo.instructions import MemoParams, create_memo

    from roadie.chain.client import connect
    from roadie.chain.platform import platform_keypair
    from roadie.chain.sending import checked_size, sign, wait_for
    from roadie.settings import get_settings

    settings = get_settings()
    signer = platform_keypair(settings)
    last: Signature | None = None
    async with connect(settings) as chain:
        for start in range(0, count, 100):  # a fresh blockhash every 100: it stays valid for 150 blocks
            blockhash, _ = await chain.latest_blockhash()
            for n in range(start, min(start + 100, count)):
                memo = create_memo(MemoParams(MEMO_PROGRAM_ID, signer.pubkey, f"bench memo {n}".encode()))
                tx = sign([memo], signer.pubkey, [signer.signer], blockhash)
                result = await chain.send(checked_size(tx))
                if result.outcome != "sent":
                    raise RuntimeError(f"memo {n} was not sent: {result}")
                last = tx.signatures[0]
        assert last is not None
        (status,) = await wait_for(chain, [last], "finalized", timeout_s=60, interval_s=0.1)
        if status is None:
            raise RuntimeError("the last memo never landed")


async def _raw_fetch(concurrency: int) -> Side:
    """List the platform's signatures (not timed), then time fetching every transaction."""
    from roadie.chain.platform import platform_keypair
    from roadie.settings import get_settings

    settings = get_settings()
    address = platform_keypair(settings).pubkey
    async with AsyncClient(settings.solana_rpc_url, timeout=30) as client:
        signatures: list[Signature] = []
        before: Signature | None = None
        while True:
            page = (
                await client.get_signatures_for_address(address, before=before, limit=1000, commitment=Finalized)
            ).value
            signatures += [info.signature for info in page]
            if len(page) < 1000:
                break
            before = page[-1].signature
        slots = asyncio.Semaphore(concurrency)

        async def fetch(signature: Signature) -> None:
            async with slots:
                found = await client.get_transaction(
                    signature, "base64", Confirmed, max_supported_transaction_version=0
                )
            if found.value is None:
                raise RuntimeError(f"{signature} was not served")

        started = time.perf_counter()
        await asyncio.gather(*(fetch(signature) for signature in signatures))
        return Side(len(signatures), time.perf_counter() - started)


def _indexer(bench: Bench, expected: int) -> Side:
    from workers.app import app

    worker = bench.start("indexer", POOLS["indexer"].command())
    wait_until(lambda: bool(app.control.ping(["indexer@" + os.uname().nodename], timeout=0.5)), timeout=60,
               what="the indexer worker", process=worker)  # fmt: skip
    with database_connection() as connection:
        started = time.perf_counter()
        app.send_task("indexer.tick", queue="indexer")
        wait_until(lambda: sql_count(connection, INDEXED) >= expected, timeout=TIMEOUT_S, what="the backlog indexed",
                   process=worker, every=POLL_S)  # fmt: skip
        elapsed = time.perf_counter() - started
        indexed = sql_count(connection, INDEXED)
    if indexed != expected:
        raise RuntimeError(f"indexed {indexed} transactions, expected {expected}")
    return Side(indexed, elapsed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=2000, help="memo transactions in the backlog")
    args = parser.parse_args()
    with Bench() as bench:
        port = free_port()
        os.environ["ROADIE_SOLANA_RPC_URL"] = f"http://127.0.0.1:{port}"
        os.environ["ROADIE_KEYPAIR_PATH"] = str(bench.log_dir / "platform-keypair.json")
        os.environ["ROADIE_INDEXER_WATCH_NFT_MINTS"] = "false"
        from roadie.settings import get_settings

        get_settings.cache_clear()
        chain = bench.start(
            "localnet", [sys.executable, "-m", "roadie.cli", "localnet", "--slot-ms", "100", "--finality-lag", "2"]
        )
        wait_until(lambda: "local Solana chain on" in chain.log(), timeout=60, what="the local chain", process=chain)
        asyncio.run(_send_memos(args.transactions))
        concurrency = get_settings().indexer_fetch_concurrency
        raw = asyncio.run(_raw_fetch(concurrency))
        roadie = _indexer(bench, raw.transactions)
        print(f"{raw.transactions} transactions on the platform address ({args.transactions} memos)")
        print_table(
            f"indexer vs raw getTransaction ({concurrency} requests in flight)",
            [
                Row("transactions/s", roadie.per_second, raw.per_second),
                Row("seconds for the backlog", roadie.seconds, raw.seconds, decimals=2),
            ],
        )
    return 0


if __name__ == "__main__":
    run_main(main)
