"""The chain client: retries transient RPC failures, reports the rest, and never shows the platform key."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from solders.keypair import Keypair

from roadie.chain.client import Chain, EndpointLost, RpcBadAnswer, RpcRejected, RpcUnavailable, connect
from roadie.chain.keys import KeypairError, PlatformKeypair, create_keypair_file, load_keypair
from roadie.logs import configure_logging
from roadie.settings import Settings, get_settings
from tests.conftest import free_port
from tests.fixtures.chain import StallingProxy, control


def fast_settings(**changes: Any) -> Settings:
    return get_settings().model_copy(update={"solana_rpc_backoff_s": 0.01, "solana_rpc_attempts": 3, **changes})


def run(work: Any) -> Any:
    return asyncio.run(work)


def test_a_keypair_file_is_read_and_its_secret_never_shows_in_reprs_or_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "id.json"
    created = create_keypair_file(path)
    secret = json.loads(path.read_text())
    keypair = load_keypair(path)
    configure_logging("test")

    logging.getLogger("roadie.test").info(
        "loaded %s", keypair, extra={"keypair": keypair, "signer": str(keypair), "bytes": secret}
    )

    logged = capsys.readouterr().err
    assert keypair.pubkey == created.pubkey
    assert path.stat().st_mode & 0o777 == 0o600
    assert str(keypair.pubkey) in logged
    assert str(keypair.signer) not in logged  # base58 of the 64 secret bytes
    assert json.dumps(secret)[1:-1] not in logged.replace(" ", "")
    assert repr(keypair) == f"PlatformKeypair({keypair.pubkey})"


def test_derived_keypairs_are_reproducible_and_distinct_per_purpose() -> None:
    platform = PlatformKeypair(Keypair())

    assert platform.derive("a").pubkey() == platform.derive("a").pubkey()
    assert platform.derive("a").pubkey() != platform.derive("b").pubkey()
    assert PlatformKeypair(Keypair()).derive("a").pubkey() != platform.derive("a").pubkey()


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "does not exist"), ("[1, 2, 3]", "not a JSON array of 64 bytes"), ("{not json", "not a JSON array")],
)
def test_a_bad_keypair_file_is_named_but_its_content_is_not_repeated(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    path = tmp_path / "id.json"
    if content is not None:
        path.write_text(content)

    with pytest.raises(KeypairError, match=reason) as error:
        load_keypair(path)

    assert str(path) in str(error.value)
    assert error.value.code == "keypair_invalid"
    assert "[1, 2, 3]" not in str(error.value)


@pytest.mark.usefixtures("localnet")
def test_a_rate_limiting_endpoint_is_retried_with_backoff() -> None:
    control("roadie_failNext", {"status": 429, "count": 2})

    async def work() -> int:
        async with connect(fast_settings()) as chain:
            return await chain.block_height()

    assert run(work()) > 0


@pytest.mark.usefixtures("localnet")
def test_an_endpoint_that_keeps_failing_is_reported_as_unavailable_without_its_url() -> None:
    control("roadie_failNext", {"status": 503, "count": 3})

    async def work() -> int:
        async with connect(fast_settings()) as chain:
            return await chain.block_height()

    with pytest.raises(RpcUnavailable, match="getBlockHeight failed 3 times: HTTP 503") as error:
        run(work())
    assert error.value.code == "rpc_unavailable"
    assert "127.0.0.1" not in str(error.value)


def test_an_endpoint_that_is_down_is_retried_then_reported() -> None:
    async def work() -> int:
        async with connect(fast_settings(), url=f"http://127.0.0.1:{free_port()}") as chain:
            return await chain.block_height()

    with pytest.raises(RpcUnavailable, match="connection failed"):
        run(work())


@pytest.mark.usefixtures("localnet")
def test_an_rpc_error_retrying_cannot_fix_is_not_retried() -> None:
    async def work() -> Any:
        chain = Chain(fast_settings())
        try:
            return await chain.call("getBlock", lambda client: client.get_block(10**12))
        finally:
            await chain.close()

    with pytest.raises(RpcRejected, match="getBlock: RPC error -32004"):
        run(work())


# --- several endpoints: failover, rest, one endpoint per consistent read --------------------------


def unhealthy_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "chain.rpc_endpoint_unhealthy"]


@pytest.mark.usefixtures("localnet")
def test_a_call_fails_over_to_the_next_endpoint_and_the_failed_one_rests_then_is_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="roadie.chain.client")

    def heights(down: str, rest_s: float, jobs: int) -> list[int]:
        """One ``Chain`` per job, as the chain pool connects, each asking once."""

        async def job() -> int:
            urls = [down, get_settings().solana_rpc_url]
            async with connect(fast_settings(solana_rpc_urls=urls, solana_rpc_unhealthy_s=rest_s)) as chain:
                return await chain.block_height()

        found = []
        for _ in range(jobs):
            found.append(run(job()))
            time.sleep(2 * rest_s if rest_s < 1 else 0)
        return found

    assert all(height > 0 for height in heights(f"http://127.0.0.1:{free_port()}", rest_s=60, jobs=3))
    (passed_over,) = unhealthy_logs(caplog)  # once: the later jobs of this process went straight to endpoint 2
    assert (passed_over.endpoint, passed_over.call) == (1, "getBlockHeight")  # type: ignore[attr-defined]
    assert "connection failed" in passed_over.error  # type: ignore[attr-defined]
    assert "127.0.0.1" not in f"{passed_over.getMessage()} {passed_over.__dict__}"

    caplog.clear()
    heights(f"http://127.0.0.1:{free_port()}", rest_s=0.05, jobs=2)  # a rest this short is over by the next job
    assert len(unhealthy_logs(caplog)) == 2


@pytest.mark.usefixtures("localnet")
def test_an_endpoint_answering_garbage_is_passed_over() -> None:
    with StallingProxy() as second:
        control("roadie_failNext", {"status": 200, "body": "<html>502 Bad Gateway</html>", "count": 1})

        async def work() -> int:
            urls = [get_settings().solana_rpc_url, second.url]
            async with connect(fast_settings(solana_rpc_urls=urls, solana_rpc_attempts=1)) as chain:
                return await chain.block_height()

        assert run(work()) > 0


@pytest.mark.usefixtures("localnet")
@pytest.mark.parametrize("body", ["<html>oops</html>", '{"jsonrpc": "2.0", "id": 1, "result": {"unexpected": 1}}'])
def test_an_only_endpoint_answering_garbage_is_a_clear_error_without_its_url(body: str) -> None:
    control("roadie_failNext", {"status": 200, "body": body, "count": 3})

    async def work() -> Any:
        async with connect(fast_settings()) as chain:
            return await chain.latest_blockhash()

    with pytest.raises(RpcBadAnswer, match="getLatestBlockhash failed 3 times: endpoint 1 answered something") as error:
        run(work())
    assert error.value.code == "rpc_bad_answer"
    assert "127.0.0.1" not in str(error.value)


@pytest.mark.usefixtures("localnet")
def test_a_consistent_view_stays_on_the_endpoint_that_answered_it_first() -> None:
    with StallingProxy() as first:

        async def work() -> None:
            urls = [first.url, get_settings().solana_rpc_url]
            async with connect(fast_settings(solana_rpc_urls=urls, solana_rpc_unhealthy_s=60)) as chain:
                view = chain.consistent()
                await view.block_height()  # answered by endpoint 1, the first healthy one
                first.kill()
                assert await chain.block_height() > 0  # the chain fails over to endpoint 2
                with pytest.raises(EndpointLost):  # the view does not: its reads must agree
                    await view.block_height()
                assert await chain.consistent().block_height() > 0  # a new view chooses afresh

        run(work())


@pytest.mark.usefixtures("localnet")
def test_reads_whose_endpoint_dies_midway_are_all_repeated_on_the_next() -> None:
    with StallingProxy() as first:

        async def work() -> list[list[int]]:
            urls = [first.url, get_settings().solana_rpc_url]
            runs: list[list[int]] = []

            async def reads(view: Chain) -> list[int]:
                runs.append([await view.block_height()])
                if len(runs) == 1:
                    first.kill()  # between two reads that must agree
                runs[-1].append(await view.block_height())
                return runs[-1]

            async with connect(fast_settings(solana_rpc_urls=urls, solana_rpc_unhealthy_s=60)) as chain:
                await chain.consistently(reads)
            return runs

        lost, repeated = run(work())
        assert len(lost) == 1  # the first run's second read never mixed in another endpoint's answer
        assert len(repeated) == 2
