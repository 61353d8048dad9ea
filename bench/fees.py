"""What compute budgets and priority fees cost a mint: building it, and the lamports it pays.

    python -m bench.fees [--mints 40] [--slot-ms 100]

Both sides build, sign and send the same kind of mint transaction (``nft.mint``'s instructions for a fresh
track each) on one local chain (``roadie localnet`` in its own process), alternating in rounds of ten so
that load on the machine falls on both alike, then wait for every mint to be finalized and read its
``meta.fee``:

- Roadie: :func:`roadie.chain.budget.sign_budgeted`, as the mint job signs: ``getRecentPrioritizationFees``
  for the accounts it writes, a simulation, then the budgeted transaction.
- Baseline: the same instructions signed as they were before budgets (no ComputeBudget instructions).

It reports mints built per second (wall time of building and sending, RPC round trips included), CPU per
mint of this process and of the chain's, and lamports paid per mint. The job's other fee cost (reading
``meta.fee`` once a transaction is confirmed and again at finalized) is two ``getTransaction`` calls per
mint, not counted here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import Bench, Process, Row, free_port, print_table, run_main, wait_port, wait_until

if TYPE_CHECKING:
    from solders.signature import Signature

    from roadie.chain.client import Chain

ROUND = 10


@dataclass
class Side:
    """What one side spent building and sending its mints."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    chain_cpu_s: float = 0.0
    signatures: list[Signature] = field(default_factory=list)
    fees: list[int] = field(default_factory=list)
    limits: list[int] = field(default_factory=list)


async def build_and_send(chain: Chain, side: Side, count: int, budgeted: bool, localnet: Process) -> None:
    """Build, sign and send ``count`` mints, adding the time spent to ``side``."""
    from solders.keypair import Keypair

    from roadie.chain.budget import sign_budgeted
    from roadie.chain.fees import compute_budget
    from roadie.chain.nft import mint_instructions, mint_keypair
    from roadie.chain.platform import platform_keypair
    from roadie.chain.sending import sign
    from roadie.chain.token import TokenMetadata, mint_account_space

    platform = platform_keypair()
    wall, cpu, chain_cpu = time.perf_counter(), time.process_time(), localnet.cpu_seconds()
    for _ in range(count):
        track_id = uuid.uuid4()
        mint = mint_keypair(platform, track_id)
        fields = {"artist": "bench", "track_id": str(track_id)}
        metadata = TokenMetadata(platform.pubkey, mint.pubkey(), "Bench", "ROADIE", "ipfs://bafkrei" + "a" * 52, fields)
        blockhash, _ = await chain.latest_blockhash()
        lamports = await chain.rent_exempt_minimum(mint_account_space(metadata)[1])
        instructions = mint_instructions(platform.pubkey, Keypair().pubkey(), metadata, lamports)
        signers = [platform.signer, mint]
        if budgeted:
            tx = await sign_budgeted(chain, instructions, signers, blockhash, chain.settings)
        else:
            tx = sign(instructions, platform.pubkey, signers, blockhash)
        result = await chain.send(bytes(tx))
        if result.outcome != "sent":
            raise RuntimeError(f"a mint was refused: {result}")
        side.signatures.append(tx.signatures[0])
        side.limits.append(compute_budget(tx.message).unit_limit)
    side.wall_s += time.perf_counter() - wall
    side.cpu_s += time.process_time() - cpu
    side.chain_cpu_s += localnet.cpu_seconds() - chain_cpu


async def settle(chain: Chain, side: Side) -> None:
    """Wait until every mint of the side is finalized and read what each paid."""
    signatures = list(side.signatures)
    while True:
        statuses = await chain.statuses(signatures)
        if all(s is not None and s.confirmations is None for s in statuses):
            break
        await asyncio.sleep(0.1)
    for signature in signatures:
        fee = await chain.fee_paid(signature)
        assert fee is not None
        side.fees.append(fee)


def run(mints: int, localnet: Process) -> tuple[Side, Side]:
    from roadie.chain.client import connect

    budgeted, plain = Side(), Side()

    async def work() -> None:
        async with connect() as chain:
            for start in range(0, mints, ROUND):
                count = min(ROUND, mints - start)
                await build_and_send(chain, plain, count, False, localnet)
                await build_and_send(chain, budgeted, count, True, localnet)
            await settle(chain, plain)
            await settle(chain, budgeted)

    asyncio.run(work())
    return budgeted, plain


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mints", type=int, default=40)
    parser.add_argument("--slot-ms", type=int, default=100)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="roadie-bench-fees-"))
    port = free_port()
    os.environ.update(
        {
            "ROADIE_SOLANA_RPC_URL": f"http://127.0.0.1:{port}",
            "ROADIE_KEYPAIR_PATH": str(home / "platform-keypair.json"),
        }
    )
    with Bench() as bench:
        localnet = bench.start(
            "localnet",
            [sys.executable, "-m", "roadie.cli", "localnet", "--port", str(port), "--slot-ms", str(args.slot_ms)],
        )
        wait_port(port, localnet)
        wait_until(lambda: "local Solana chain on" in localnet.log(), timeout=60, what="provisioning", process=localnet)
        budgeted, plain = run(args.mints, localnet)
    n = args.mints
    print(json.dumps({"mints": n, "slot_ms": args.slot_ms}))
    print_table(
        f"The cost of compute budgets and priority fees per mint ({n} mints each, a block every {args.slot_ms} ms)",
        [
            Row("mints built and sent per second", n / budgeted.wall_s, n / plain.wall_s),
            Row("CPU ms per mint, this process", budgeted.cpu_s * 1000 / n, plain.cpu_s * 1000 / n),
            Row("CPU ms per mint, the local chain", budgeted.chain_cpu_s * 1000 / n, plain.chain_cpu_s * 1000 / n),
            Row("compute-unit limit per mint", sum(budgeted.limits) / n, sum(plain.limits) / n, 0),
            Row("lamports paid per mint (meta.fee)", sum(budgeted.fees) / n, sum(plain.fees) / n, 0),
        ],
    )
    return 0


if __name__ == "__main__":
    run_main(main)
