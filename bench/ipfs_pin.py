"""IPFS add+pin throughput through Roadie's adapter versus a raw HTTP ``add`` of the same bytes.

    python -m bench.ipfs_pin [--sizes-mib 1,10,50] [--rounds 6]

One local js-ipfs node (``tools/ipfs-node``, a fresh repository in a temporary folder) serves both sides.
For each size and round, fresh random bytes are written to a file; then, in alternating order (so neither
side always finds the blocks already stored by the other):

- Roadie: what ``ipfs.pin_track`` asks of the node per file, through ``roadie.ipfs.client.IpfsNode``:
  ``add`` (streamed from the file, pinned), then ``pinning.ensure_pinned``: ``pin ls`` to verify
  (``pin add`` and ``pin ls`` again only when it is not listed);
- baseline: one ``POST /api/v0/add`` with httpx, streaming the same file as multipart, with the same
  options (CIDv1, raw leaves, 256 KiB chunks, base32, pin).

Both must answer the same CID. MB/s = size / median wall time of the rounds (1 MB = 10^6 bytes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
from multiaddr import Multiaddr

from bench.common import Row, print_table, run_main
from roadie.ipfs.client import IpfsNode
from roadie.ipfs.node import LocalIpfsNode
from roadie.ipfs.pinning import ensure_pinned

RAW_ADD_PARAMS = {
    "cid-version": "1",
    "raw-leaves": "true",
    "chunker": "size-262144",
    "cid-base": "base32",
    "hash": "sha2-256",
    "pin": "true",
}


def roadie_pin(node: IpfsNode, path: Path) -> str:
    added = node.add_file(path)
    ensure_pinned(node, added.cid)
    return added.cid


def raw_add(client: httpx.Client, path: Path) -> str:
    with path.open("rb") as stream:
        response = client.post("/api/v0/add", params=RAW_ADD_PARAMS, files={"file": (path.name, stream)})
    response.raise_for_status()
    return str(response.json()["Hash"])


def measure(node: IpfsNode, client: httpx.Client, path: Path, mib: int, rounds: int) -> Row:
    """Median MB/s of each side over ``rounds`` fresh files of ``mib`` MiB, the order alternating per round."""
    sides: dict[str, list[float]] = {"roadie": [], "raw": []}
    work: dict[str, Callable[[], str]] = {
        "roadie": partial(roadie_pin, node, path),
        "raw": partial(raw_add, client, path),
    }
    for round_ in range(rounds):
        path.write_bytes(os.urandom(mib << 20))
        cids = set()
        for side in ("roadie", "raw") if round_ % 2 == 0 else ("raw", "roadie"):
            started = time.perf_counter()
            cids.add(work[side]())
            sides[side].append(time.perf_counter() - started)
        if len(cids) != 1:
            raise RuntimeError(f"the two sides answered different CIDs: {cids}")
    megabytes = (mib << 20) / 1e6
    return Row(
        f"{mib} MiB file: MB/s",
        megabytes / statistics.median(sides["roadie"]),
        megabytes / statistics.median(sides["raw"]),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mib", default="1,10,50", help="file sizes in MiB (default 1,10,50)")
    parser.add_argument(
        "--rounds", type=int, default=6, help="rounds per size, even so each side goes first as often (default 6)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes_mib.split(",")]

    print(f"{os.cpu_count()} CPUs, 1-minute load average {os.getloadavg()[0]:.2f} before the run")
    with tempfile.TemporaryDirectory(prefix="roadie-bench-ipfs-") as scratch:
        local = LocalIpfsNode(Path(scratch) / "repo")
        addr = local.start()
        port = Multiaddr(addr).value_for_protocol("tcp")
        node = IpfsNode(addr, timeout_s=300, attempts=1)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
                rows = [measure(node, client, Path(scratch) / f"{mib}mib.bin", mib, args.rounds) for mib in sizes]
        finally:
            node.close()
            local.stop()

    print_table(f"IPFS add+pin, median of {args.rounds} rounds per size (one local js-ipfs node)", rows)
    print("\nsummary: " + ", ".join(f"{row.metric.split(':')[0]} {row.roadie / row.baseline:.2f}x" for row in rows))
    return 0


if __name__ == "__main__":
    run_main(main)
