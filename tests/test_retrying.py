"""One retry vocabulary: which failures are transient, for client calls and jobs alike, and how calls retry."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import httpx
import pytest
from celery.exceptions import SoftTimeLimitExceeded
from ipfshttpclient import exceptions as ipfs_errors
from solana.exceptions import SolanaRpcException
from solana.rpc.core import RPCException
from solders.rpc.errors import (
    InvalidParamsMessage,
    MinContextSlotNotReached,
    MinContextSlotNotReachedMessage,
    NodeUnhealthy,
    NodeUnhealthyMessage,
)
from sqlalchemy.exc import OperationalError

from roadie.jobs.errors import PermanentError, TransientError
from roadie.retrying import backoff_seconds, is_transient, retry_async_call, retry_call


def http_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/")
    return httpx.HTTPStatusError("boom", request=request, response=httpx.Response(status, request=request))


def from_solana_py(cause: Exception) -> SolanaRpcException:
    """What solana-py raises when the HTTP request itself failed: its wrapper, caused by the httpx error."""
    wrapped = SolanaRpcException(cause, print, None, "getBlockHeight")
    wrapped.__cause__ = cause
    return wrapped


TRANSIENT = {
    "our TransientError": TransientError("x"),
    "timeout": TimeoutError(),
    "connection reset": ConnectionResetError(),
    "httpx connect timeout": httpx.ConnectTimeout("x"),
    "httpx connection refused": httpx.ConnectError("x"),
    "HTTP 429": http_error(429),
    "HTTP 503": http_error(503),
    "Solana RPC over HTTP 429": from_solana_py(http_error(429)),
    "Solana RPC over HTTP 502": from_solana_py(http_error(502)),
    "Solana RPC unreachable": from_solana_py(httpx.ConnectError("x")),
    "Solana node unhealthy": RPCException(NodeUnhealthyMessage("behind", NodeUnhealthy(40))),
    "Solana node behind the asked slot": RPCException(
        MinContextSlotNotReachedMessage("behind", MinContextSlotNotReached(7))
    ),
    "IPFS node unreachable": ipfs_errors.ConnectionError(OSError("refused")),
    "IPFS node timed out": ipfs_errors.TimeoutError(OSError("timed out")),
    "IPFS node broke the protocol": ipfs_errors.ProtocolError(OSError("eof")),
    "database lock timeout": OperationalError("SELECT", {}, Exception("lock timeout")),
    "a job attempt's time limit": SoftTimeLimitExceeded(),
}
PERMANENT = {
    "our PermanentError": PermanentError("x"),
    "a bug": ValueError(),
    "a missing key": KeyError("x"),
    "HTTP 404": http_error(404),
    "HTTP 422": http_error(422),
    "Solana RPC over HTTP 400": from_solana_py(http_error(400)),
    "Solana invalid params": RPCException(InvalidParamsMessage("bad")),
    "IPFS node answered an error": ipfs_errors.ErrorResponse("not pinned", None),
}


@pytest.mark.parametrize("error", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_transient_failures_are_retried(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize("error", PERMANENT.values(), ids=PERMANENT.keys())
def test_permanent_failures_are_not(error: BaseException) -> None:
    assert not is_transient(error)


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (8, 60.0), (30, 60.0)]:
        delays = [backoff_seconds(attempt, base=1.0, cap=60.0, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not fixed


def failing(*errors: BaseException) -> tuple[list[int], Callable[[], int]]:
    """A call that raises ``errors`` one per try, then answers 42; and the list of its tries."""
    tries: list[int] = []

    def call() -> int:
        tries.append(len(tries) + 1)
        if len(tries) <= len(errors):
            raise errors[len(tries) - 1]
        return 42

    return tries, call


def test_a_call_is_tried_again_while_it_fails_transiently() -> None:
    tries, call = failing(http_error(503), httpx.ConnectError("x"))

    assert retry_call("test", 3, 0.001, call) == 42
    assert tries == [1, 2, 3]


def test_a_call_that_keeps_failing_raises_its_last_failure_after_the_attempts() -> None:
    tries, call = failing(*(httpx.ConnectError(str(n)) for n in range(5)))

    with pytest.raises(httpx.ConnectError, match="2"):
        retry_call("test", 3, 0.001, call)
    assert tries == [1, 2, 3]


@pytest.mark.parametrize("error", [http_error(404), SoftTimeLimitExceeded()], ids=["permanent", "time limit"])
def test_a_permanent_failure_or_the_attempts_time_limit_is_not_retried_by_the_call(error: BaseException) -> None:
    tries, call = failing(error)

    with pytest.raises(type(error)):
        retry_call("test", 3, 0.001, call)
    assert tries == [1]


def test_an_awaitable_call_is_tried_again_the_same_way() -> None:
    tries, call = failing(http_error(503))

    async def answer(client: str) -> int:
        return call()

    assert asyncio.run(retry_async_call("test", 3, 0.001, lambda: answer("a client"))) == 42
    assert tries == [1, 2]
