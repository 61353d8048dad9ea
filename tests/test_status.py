"""`roadie status` shows the platform's health on one screen, from the ledger, the workers and the servers."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from roadie.jobs.types import QUEUES
from roadie.settings import Settings
from roadie.status import gather, render
from tests.conftest import free_port
from tests.helpers import submit, wait_for_job


@pytest.mark.usefixtures("worker")
def test_status_shows_the_api_each_pools_workers_and_waiting_jobs_and_the_last_hours_failures(
    api_url: str, client: httpx.Client
) -> None:
    failed = wait_for_job(client, submit(client, {"fail": "permanent"})["id"], "failed")
    nothing_there = free_port()  # the chain and IPFS node this test asks about are down: part of the answer
    settings = Settings(
        api_port=urlsplit(api_url).port,
        solana_rpc_urls=f"http://127.0.0.1:{nothing_there}",
        ipfs_api_addr=f"/ip4/127.0.0.1/tcp/{nothing_there}/http",
    )

    screen = render(gather(settings), QUEUES)

    assert f"api      up at http://127.0.0.1:{settings.api_port}" in screen
    assert "relay    outbox 0 due" in screen
    assert "chain    unreachable (1 RPC endpoint(s)): getSlot failed 1 times: connection failed" in screen
    assert f":{nothing_there}" not in screen.split("chain ", 1)[1].splitlines()[0]  # never the URL
    assert f"ipfs     unreachable at /ip4/127.0.0.1/tcp/{nothing_there}/http" in screen
    default_row = next(line for line in screen.splitlines() if line.startswith("default "))
    assert default_row.split()[1:4] == ["1", "2", "0"]  # one worker, concurrency 2, nothing waiting
    assert f"      1  platform.echo  {failed['error']['code']}" in screen
    assert len(screen.splitlines()) < 25  # one screen
