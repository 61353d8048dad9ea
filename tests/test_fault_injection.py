"""Fault injection is for tests only: it cannot be armed by accident, and never in production."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from roadie.settings import Settings

CRASH_AT_BEFORE_SEND = "from roadie.chain.journal import crash_point; crash_point('before_send'); print('alive')"


def run_crash_point(marker: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Reach ``before_send`` in a process (and process group) of its own, as a chain worker would."""
    environment = {k: v for k, v in os.environ.items() if k not in ("ROADIE_FAULT_INJECTION", "ROADIE_ENV")}
    return subprocess.run(
        [sys.executable, "-c", CRASH_AT_BEFORE_SEND],
        env=environment | {"ROADIE_TEST_CRASH_POINT": f"before_send:{marker}"} | env,
        capture_output=True,
        text=True,
        check=False,
        start_new_session=True,
        timeout=60,
    )


def test_a_crash_point_is_ignored_unless_fault_injection_is_on(tmp_path: Path) -> None:
    result = run_crash_point(tmp_path / "marker")

    assert result.returncode == 0
    assert result.stdout == "alive\n"
    assert not (tmp_path / "marker").exists()
    assert "chain.crash_point_refused" in result.stderr


def test_with_fault_injection_on_a_crash_point_kills_the_worker_once(tmp_path: Path) -> None:
    first = run_crash_point(tmp_path / "marker", ROADIE_FAULT_INJECTION="true")
    second = run_crash_point(tmp_path / "marker", ROADIE_FAULT_INJECTION="true")

    assert first.returncode == -signal.SIGKILL
    assert (tmp_path / "marker").exists()
    assert second.returncode == 0


def test_production_refuses_fault_injection(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="ROADIE_FAULT_INJECTION cannot be on when ROADIE_ENV=production"):
        Settings(env="production", fault_injection=True)
    result = run_crash_point(tmp_path / "marker", ROADIE_FAULT_INJECTION="true", ROADIE_ENV="production")

    assert result.returncode == 1
    assert not (tmp_path / "marker").exists()
