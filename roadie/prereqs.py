"""What `make demo` and `make up` need from the machine, checked in seconds before anything is installed.

Standard library only: `make` runs it with the system's python3 before the virtualenv exists
(`python3 -m roadie.prereqs`). Each problem is one line with the command that fixes it.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from dataclasses import dataclass

MIN_PYTHON = (3, 11)
MIN_FREE_DISK_BYTES = 3 * 1024**3  # the virtualenv, the IPFS node's node_modules and the embedded servers
#: Ports the platform binds on its defaults. The IPFS (5001) and chain (8899) ports are not here: a node
#: already answering there is used instead of starting one.
DEFAULT_PORTS = {8000: "the API", 54329: "the embedded PostgreSQL", 56379: "the embedded Redis"}


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str


def _missing_tools() -> list[Problem]:
    apt = "sudo apt-get install -y" if shutil.which("apt-get") else "install with your package manager:"
    wanted = {
        "ffmpeg": ("ffmpeg (the media pool transcodes with it)", f"{apt} ffmpeg"),
        "ffprobe": ("ffprobe (uploads are checked with it)", f"{apt} ffmpeg"),
        "node": ("Node.js (the local IPFS node runs on it)", f"{apt} nodejs npm"),
        "npm": ("npm (installs the local IPFS node)", f"{apt} npm"),
    }
    return [Problem(f"{what} is not installed", fix) for tool, (what, fix) in wanted.items() if not shutil.which(tool)]


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def problems(ports: dict[int, str] | None = None, home: str = ".") -> list[Problem]:
    """Everything that would stop the demo, in the order a newcomer should fix it."""
    found: list[Problem] = []
    if sys.version_info < MIN_PYTHON:
        found.append(
            Problem(
                f"Python {'.'.join(map(str, MIN_PYTHON))} or newer is needed; this is {sys.version.split()[0]}",
                "install python3.11 and run: make PYTHON=python3.11 demo",
            )
        )
    found.extend(_missing_tools())
    for port, owner in (DEFAULT_PORTS if ports is None else ports).items():
        if _port_in_use(port):
            fix = f"stop what listens there (ss -ltnp 'sport = :{port}' shows it)"
            found.append(Problem(f"port {port} ({owner}) is taken", fix))
    free = shutil.disk_usage(home).free
    if free < MIN_FREE_DISK_BYTES:
        found.append(
            Problem(f"only {free / 1024**3:.1f} GiB free on disk; about 3 GiB is needed", "free some disk space")
        )
    return found


def main() -> int:
    found = problems(home=os.getcwd())
    for problem in found:
        print(f"missing: {problem.what}\n    fix: {problem.fix}", file=sys.stderr)
    if found:
        print(f"{len(found)} prerequisite(s) missing; nothing was installed or started.", file=sys.stderr)
        return 1
    print("prerequisites: python, ffmpeg, ffprobe, node, npm, free ports and disk are all here")
    return 0


if __name__ == "__main__":
    sys.exit(main())
