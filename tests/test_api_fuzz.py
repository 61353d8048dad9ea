"""Property-based requests from the OpenAPI document: no input makes the API answer 500 or break its contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, create_key

CONFIG = ROOT / "tests" / "schemathesis.toml"


@pytest.mark.timeout(240)
def test_no_generated_request_breaks_the_documented_contract(api_url: str, tmp_path: Path) -> None:
    key = create_key("fuzz", ["admin"])  # admins hold every scope: every operation is reachable
    spec = tmp_path / "openapi.json"  # the first request imports every job type: slow under load
    spec.write_bytes(httpx.get(f"{api_url}/openapi.json", timeout=120).raise_for_status().content)
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run", str(spec), "--url", api_url,
         "--header", f"Authorization: Bearer {key}"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip

    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
