"""NFT mints per second: ``nft.mint`` jobs from one worker and from four, against a bare script; and from two
workers over two RPC endpoints, one killed mid-run, against the same two workers over one endpoint.

    python -m bench.mint [--mints 40] [--slot-ms 100]

Every side mints the same kind of transaction (Token-2022 mint with metadata pointer, token metadata
with three fields, the owner's token account, MintTo 1, mint authority removed) for its own fresh
tracks, on the same local chain (``roadie localnet`` in its own process, a block every ``--slot-ms``,
finalized two blocks later), and counts a mint only once it is **finalized**.

- Roadie: N ``nft.mint`` jobs are accepted (job + outbox rows) while the workers are running; the clock
  starts when the relay starts publishing and stops when the ledger shows N succeeded jobs. Each job
  reads the track, journals the signed transaction, sends it and follows it to finalized.
- Baseline: this process builds and signs the same N transactions, sends them all, then polls
  ``getSignatureStatuses`` until every one is finalized: no database, no journal, no queue.
- Failover: two workers with ``ROADIE_SOLANA_RPC_URLS=<front end A>,<front end B>``, each front end a TCP
  relay to the chain in a process of its own (``bench.tcp_relay``), A SIGKILLed once half the mints
  succeeded; against the same two workers with B alone. Every request crosses one relay on both sides; the
  runs go one endpoint, two, two, one (each ``--mints``), and both sides report the workers' CPU per mint.
  ``--failover-only`` runs just these.

    python -m bench.mint --failover-only [--mints 40]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from bench.common import Bench, Process, Row, free_port, print_table, run_main, sql_scalar, wait_port, wait_until
from roadie.processes import POOLS

SUCCEEDED = "SELECT count(*) FROM jobs WHERE type = 'nft.mint' AND status = 'succeeded'"
FAILED = "SELECT count(*) FROM jobs WHERE type = 'nft.mint' AND status = 'failed'"


def make_tracks(count: int) -> list[uuid.UUID]:
    """Artists with wallets and tracks with pinned metadata, as ingest leaves them."""
    from solders.keypair import Keypair

    from models.music import Track, TrackFile, User, UserWallet, Wallet
    from roadie.db import transaction

    ids = []
    with transaction() as session:
        for _ in range(count):
            tag = uuid.uuid4().hex
            artist = User(username=f"bench-{tag[:12]}", is_artist=True)
            wallet = Wallet(address=str(Keypair().pubkey()), chain="solana", is_primary=True)
            session.add_all([artist, wallet])
            session.flush()
            session.add(UserWallet(user_id=artist.id, wallet_id=wallet.id))
            track = Track(title=f"Bench {tag[:8]}", artist_id=artist.id, status="ready", source_sha256="0" * 64)
            session.add(track)
            session.flush()
            digest = hashlib.sha256(tag.encode()).hexdigest()
            session.add(
                TrackFile(
                    track_id=track.id, kind="metadata", sha256=digest, cid=f"bafkrei{digest[:52]}", pin_state="pinned"
                )
            )
            ids.append(track.id)
    return ids


def enqueue(track_ids: list[uuid.UUID]) -> None:
    """One ``nft.mint`` job per track, created as the pipeline creates its mint stage."""
    from roadie.db import transaction
    from roadie.jobs import creation
    from roadie.jobs.types import job_types

    with transaction() as session:
        for track_id in track_ids:
            creation.enqueue(session, job_types()["nft.mint"], {"track_id": str(track_id)}, actor="bench")


@dataclass(frozen=True)
class Run:
    mints_per_s: float
    worker_cpu_ms_per_mint: float


def run_roadie(
    bench: Bench, mints: int, workers: int, *, rpc_urls: str | None = None, halfway: Callable[[], None] | None = None
) -> Run:
    """N mints by ``workers`` one-process chain workers (with ``rpc_urls``, if given); ``halfway`` runs once half
    of them succeeded."""
    before = sql_scalar(SUCCEEDED)
    enqueue(make_tracks(mints))
    if rpc_urls is not None:
        os.environ["ROADIE_SOLANA_RPC_URLS"] = rpc_urls
    try:
        started = [bench.start(f"chain-{workers}-{n}-{uuid.uuid4().hex[:4]}", chain_worker()) for n in range(workers)]
    finally:
        os.environ.pop("ROADIE_SOLANA_RPC_URLS", None)
    time.sleep(8)  # let the workers start; the relay (and the clock) starts after
    cpu_before = sum(process.cpu_seconds() for process in started)
    t0 = time.perf_counter()
    relay = bench.relay()
    pending = [halfway] if halfway is not None else []

    def finished() -> bool:
        done = sql_scalar(SUCCEEDED) + sql_scalar(FAILED) - before
        if pending and done >= mints // 2:
            pending.pop()()
        return done >= mints

    wait_until(finished, timeout=600, what="every mint", process=relay)
    elapsed = time.perf_counter() - t0
    cpu_s = sum(process.cpu_seconds() for process in started) - cpu_before
    if sql_scalar(FAILED):
        raise RuntimeError(f"{sql_scalar(FAILED)} mints failed:\n{started[0].log_tail()}")
    for process in [relay, *started]:
        process.stop()
        bench.processes.remove(process)
    return Run(mints / elapsed, 1000 * cpu_s / mints)


def run_failover(bench: Bench, mints: int, chain_port: int) -> tuple[Run, Run]:
    """Two workers over two front ends, the preferred one killed halfway; the same two over one of them alone.
    Every request crosses one relay either way; the runs go single, failover, failover, single (ABBA), so a
    drift of the shared machine's load weighs on both sides alike."""

    def front_end(name: str) -> tuple[Process, str]:
        port = free_port()
        process = bench.start(name, [sys.executable, "-m", "bench.tcp_relay", str(port), str(chain_port)])
        wait_port(port, process)
        return process, f"http://127.0.0.1:{port}"

    _, survivor = front_end("rpc-front-end")
    runs: dict[str, list[Run]] = {"failover": [], "single": []}
    for side in ("single", "failover", "failover", "single"):
        if side == "single":
            runs[side].append(run_roadie(bench, mints, workers=2, rpc_urls=survivor))
            continue
        doomed, preferred = front_end(f"rpc-front-end-{len(runs[side])}")
        halfway = partial(os.killpg, doomed.pid, signal.SIGKILL)
        runs[side].append(run_roadie(bench, mints, workers=2, rpc_urls=f"{preferred},{survivor}", halfway=halfway))

    def overall(side: list[Run]) -> Run:
        seconds = sum(mints / run.mints_per_s for run in side)
        return Run(len(side) * mints / seconds, sum(run.worker_cpu_ms_per_mint for run in side) / len(side))

    return overall(runs["failover"]), overall(runs["single"])


def chain_worker() -> list[str]:
    """A ``chain`` pool worker with ONE process: the benchmark counts processes by counting workers."""
    return replace(POOLS["chain"], concurrency=1).command(node=f"{uuid.uuid4().hex[:8]}@%h")


def run_baseline(mints: int) -> float:
    """The same transactions from a bare script: sign, send all, poll until every one is finalized."""
    from solders.keypair import Keypair

    from roadie.chain.client import connect
    from roadie.chain.nft import mint_instructions, mint_keypair
    from roadie.chain.platform import platform_keypair
    from roadie.chain.sending import sign
    from roadie.chain.token import TokenMetadata, mint_account_space

    platform = platform_keypair()

    async def work() -> float:
        async with connect() as chain:
            t0 = time.perf_counter()
            blockhash, _ = await chain.latest_blockhash()
            sent = []
            for _ in range(mints):
                track_id = uuid.uuid4()
                mint = mint_keypair(platform, track_id)
                fields = {"artist": "bench", "track_id": str(track_id)}
                metadata = TokenMetadata(
                    platform.pubkey, mint.pubkey(), "Bench", "ROADIE", "ipfs://bafkrei" + "a" * 52, fields
                )
                lamports = await chain.rent_exempt_minimum(mint_account_space(metadata)[1])
                instructions = mint_instructions(platform.pubkey, Keypair().pubkey(), metadata, lamports)
                tx = sign(instructions, platform.pubkey, [platform.signer, mint], blockhash)
                await chain.send(bytes(tx))
                sent.append(tx.signatures[0])
            while True:
                statuses = await chain.statuses(sent)
                if all(s is not None and s.confirmations is None for s in statuses):
                    return mints / (time.perf_counter() - t0)
                await asyncio.sleep(0.05)

    return asyncio.run(work())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mints", type=int, default=40)
    parser.add_argument("--slot-ms", type=int, default=100)
    parser.add_argument("--failover-only", action="store_true", help="Only the two- versus one-endpoint runs.")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="roadie-bench-chain-"))
    port = free_port()
    os.environ.update(
        {
            "ROADIE_SOLANA_RPC_URL": f"http://127.0.0.1:{port}",
            "ROADIE_KEYPAIR_PATH": str(home / "platform-keypair.json"),
            "ROADIE_CHAIN_POLL_INTERVAL_S": "0.05",
        }
    )
    with Bench() as bench:
        chain = bench.start(
            "localnet",
            [sys.executable, "-m", "roadie.cli", "localnet", "--port", str(port), "--slot-ms", str(args.slot_ms)],
        )
        wait_port(port, chain)
        wait_until(lambda: "local Solana chain on" in chain.log(), timeout=60, what="provisioning", process=chain)
        if not args.failover_only:
            baseline = run_baseline(args.mints)
            one = run_roadie(bench, args.mints, workers=1)
            four = run_roadie(bench, args.mints, workers=4)
        failover, single = run_failover(bench, args.mints, port)
    print(json.dumps({"mints": args.mints, "slot_ms": args.slot_ms}))
    if not args.failover_only:
        print_table(
            f"NFT mints/s to finalized ({args.mints} mints, a block every {args.slot_ms} ms, finality 2 blocks)",
            [
                Row("nft.mint, 1 worker (concurrency 1)", one.mints_per_s, baseline),
                Row("nft.mint, 4 workers", four.mints_per_s, baseline),
            ],
        )
    print_table(
        f"RPC failover, 2 workers, 2 x {args.mints} mints per side: 'roadie' = two RPC front ends, the preferred "
        "one killed halfway; 'baseline' = one front end",
        [
            Row("mints/s to finalized", failover.mints_per_s, single.mints_per_s, 2),
            Row("worker CPU per mint (ms)", failover.worker_cpu_ms_per_mint, single.worker_cpu_ms_per_mint, 0),
        ],
    )
    return 0


if __name__ == "__main__":
    run_main(main)
