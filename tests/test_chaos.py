"""The short chaos run (bench/chaos.py --short): each kind of process killed once under load, the broker
flushed, two beats, a worker cut off; nothing lost, nothing twice, nothing stuck. See docs/chaos.md."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.timeout(300)
def test_the_short_chaos_run_loses_duplicates_and_strands_no_job() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--short"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )

    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert "lost 0  duplicated 0  stuck 0" in run.stdout, report
    for fault in (
        "SIGKILLed worker-chain",
        "SIGKILLed worker-default-1",
        "SIGKILLed relay",
        "flushed the broker",
        "SIGKILLed beat-1",
    ):
        assert fault in run.stdout, report
    assert "cut worker-cut-off off" in run.stdout or "partition: SKIPPED" in run.stdout, report
