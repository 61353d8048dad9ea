"""A local IPFS node (js-ipfs from npm, Kubo's RPC API) for the tests, ``make demo`` and ``roadie up``.

``tools/ipfs-node/ipfs-node.sh`` knows how to start and stop it; this wraps that script so Python
callers get the same node. Production points ``ROADIE_IPFS_API_ADDR`` at Kubo instead.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from multiaddr import Multiaddr

from roadie.ipfs.client import IpfsNode
from roadie.jobs.errors import JobError

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "ipfs-node" / "ipfs-node.sh"


@dataclass
class LocalIpfsNode:
    """A js-ipfs daemon with its own repository, serving the RPC API on 127.0.0.1:port (0: any free port)."""

    repo: Path
    port: int = 0

    @classmethod
    def serving(cls, addr: str, repo: Path) -> LocalIpfsNode:
        """The node that will serve the RPC API at ``addr`` (a /ip4/127.0.0.1/tcp/<port>/http multiaddr)."""
        return cls(repo, port=int(Multiaddr(addr).value_for_protocol("tcp")))

    def _script(self, command: str) -> str:
        env = dict(os.environ, IPFS_PATH=str(self.repo), IPFS_API_PORT=str(self.port))
        done = subprocess.run([str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=90, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"ipfs-node.sh {command} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout.strip()

    @property
    def installed(self) -> bool:
        return (SCRIPT.parent / "node_modules" / ".bin" / "jsipfs").exists()

    @property
    def log_path(self) -> Path:
        return Path(f"{self.repo}.log")

    def start(self, timeout_s: float = 30) -> str:
        """Start the daemon (or find it running) and return its API multiaddr once it answers ``version``."""
        if not self.installed:
            raise RuntimeError("the local IPFS node is not installed: run `make ipfs-node`")
        self.repo.parent.mkdir(parents=True, exist_ok=True)
        addr = self._script("start")
        deadline = time.monotonic() + timeout_s
        while not answers(addr):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the IPFS node at {addr} does not answer; see {self.log_path}")
            time.sleep(0.2)
        return addr

    def stop(self) -> None:
        self._script("stop")


def answers(addr: str) -> bool:
    """Whether an IPFS node answers ``version`` at the multiaddr within two seconds."""
    node = IpfsNode(addr, timeout_s=2, attempts=1)
    try:
        node.version()
    except JobError:
        return False
    finally:
        node.close()
    return True
