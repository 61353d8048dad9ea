"""`make demo` says what the machine lacks, and how to fix it, before it installs or starts anything."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from roadie import prereqs
from tests.conftest import ROOT


def test_a_machine_without_ffmpeg_is_told_so_with_the_fix_within_seconds(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("node", "npm"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or "/bin/true")
    started = time.monotonic()

    result = subprocess.run(
        [sys.executable, "-m", "roadie.prereqs"],
        cwd=ROOT,
        env=os.environ | {"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )

    assert time.monotonic() - started < 10
    assert result.returncode == 1
    assert "missing: ffmpeg (the media pool transcodes with it) is not installed" in result.stderr
    assert "missing: ffprobe" in result.stderr
    assert "fix: " in result.stderr
    assert "Node.js" not in result.stderr
    assert result.stderr.endswith("nothing was installed or started.\n")


def test_a_taken_port_is_named_with_what_needs_it() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        found = prereqs.problems(ports={port: "the API"})

    assert f"port {port} (the API) is taken" in [problem.what for problem in found]


def test_the_demo_and_up_check_prerequisites_before_installing() -> None:
    makefile = (ROOT / "Makefile").read_text()

    assert "demo: prereqs install ipfs-node" in makefile
    assert "up: prereqs install ipfs-node" in makefile
