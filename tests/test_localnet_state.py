"""``roadie localnet --state``: a restarted local chain still holds its accounts, history and slots.

``roadie up`` and ``make demo`` keep their database across restarts, so the chain they start must
keep the NFTs and balances that database remembers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from solana.rpc.commitment import Confirmed, Finalized
from solders.keypair import Keypair

from roadie.chain.localnet import rpc_answers
from tests.conftest import ROOT, free_port
from tests.fixtures.chain import on_chain


@contextmanager
def localnet_process(state: Path, port: int) -> Iterator[str]:
    """``roadie localnet`` as ``roadie up`` runs it, stopped with SIGTERM as ``roadie up`` stops it."""
    command = [sys.executable, "-m", "roadie.cli", "localnet", "--port", str(port), "--slot-ms", "100"]
    process = subprocess.Popen([*command, "--no-provision", "--state", str(state)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not rpc_answers(url):
            assert process.poll() is None, "roadie localnet exited"
            assert time.monotonic() < deadline, "roadie localnet did not answer"
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=20)
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_restarted_chain_keeps_balances_history_and_slots(tmp_path: Path) -> None:
    state, port, wallet = tmp_path / "localnet" / "state.json", free_port(), Keypair().pubkey()
    with localnet_process(state, port) as url:
        airdrop = on_chain(lambda c: c.request_airdrop(wallet, 123_456_789), url).value
        deadline = time.monotonic() + 30
        while on_chain(lambda c: c.get_signature_statuses([airdrop]), url).value[0] is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        slot_before = on_chain(lambda c: c.get_slot(Confirmed), url).value

    assert state.exists()
    with localnet_process(state, port) as url:
        balance = on_chain(lambda c: c.get_balance(wallet), url).value
        history = on_chain(lambda c: c.get_signatures_for_address(wallet, commitment=Confirmed), url).value
        landed = on_chain(lambda c: c.get_transaction(airdrop, commitment=Confirmed), url).value
        slot_after = on_chain(lambda c: c.get_slot(Confirmed), url).value
        second = on_chain(lambda c: c.request_airdrop(wallet, 1), url).value
        deadline = time.monotonic() + 30
        while on_chain(lambda c: c.get_balance(wallet, Finalized), url).value != 123_456_790:
            assert time.monotonic() < deadline, "a transaction after the restart did not finalize"
            time.sleep(0.1)

    assert balance == 123_456_789
    assert [entry.signature for entry in history] == [airdrop]
    assert landed is not None
    assert slot_after >= slot_before
    assert second != airdrop


def test_a_state_file_of_another_format_is_refused_in_one_line_not_half_read(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"format": 99}')
    port = free_port()
    command = [sys.executable, "-m", "roadie.cli", "localnet", "--port", str(port), "--no-provision"]

    finished = subprocess.run(
        [*command, "--state", str(state)], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert finished.returncode == 1
    assert "holds format 99" in finished.stderr
    assert "move it aside to start a new chain" in finished.stderr
    assert "Traceback" not in finished.stderr
    assert not rpc_answers(f"http://127.0.0.1:{port}")
    assert os.path.getsize(state) == len('{"format": 99}')
