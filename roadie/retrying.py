"""One retry vocabulary: which failures are transient, and how long to wait before trying again.

Two levels retry, and both ask :func:`is_transient`:

- a client call (the IPFS node, the Solana RPC endpoint) is tried a few times within one job attempt,
  through :func:`retry_call` / :func:`retry_async_call` (tenacity), then the client raises a
  ``TransientError`` (or a ``PermanentError`` for what retrying cannot fix);
- a job whose attempt failed transiently is retried by the runtime (``roadie.jobs.runtime``), scheduled
  through the outbox; the job ledger owns that policy (``ROADIE_RETRY_BACKOFF_*``, ``max_attempts``).

Both wait :func:`backoff_seconds`: exponential, capped, with equal jitter.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx
import psycopg
from celery.exceptions import SoftTimeLimitExceeded
from ipfshttpclient import exceptions as ipfs_errors
from solana.exceptions import SolanaRpcException
from solana.rpc.core import RPCException
from sqlalchemy.exc import OperationalError
from tenacity import AsyncRetrying, RetryCallState, Retrying, stop_after_attempt

from roadie.jobs.errors import JobError, TransientError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: JSON-RPC error codes worth another try: node unhealthy / behind, internal error.
TRANSIENT_RPC_CODES = {-32005, -32603, -32016}
#: Failures transient by their type alone: no answer in time, or no connection. (An IPFS node that answered
#: with an error, ErrorResponse of any status, will answer it again.)
TRANSIENT_ERROR_TYPES: tuple[type[BaseException], ...] = (
    TimeoutError,
    ConnectionError,
    httpx.TransportError,
    ipfs_errors.ConnectionError,
    ipfs_errors.TimeoutError,
    ipfs_errors.ProtocolError,
    OperationalError,
    psycopg.OperationalError,
    SoftTimeLimitExceeded,
)
#: The longest wait between two tries of one client call.
CALL_BACKOFF_CAP_S = 5.0


def rpc_error_code(exc: RPCException) -> int | None:
    """The JSON-RPC code of a parsed solders error (solders keeps it in the type, not a field)."""
    error = exc.args[0] if exc.args else None
    names = {
        "SendTransactionPreflightFailureMessage": -32002,
        "BlockNotAvailableMessage": -32004,
        "NodeUnhealthyMessage": -32005,
        "SlotSkippedMessage": -32007,
        "LongTermStorageSlotSkippedMessage": -32009,
        "MinContextSlotNotReachedMessage": -32016,
        "InvalidParamsMessage": -32602,
        "MethodNotFoundMessage": -32601,
        "InternalErrorMessage": -32603,
    }
    return names.get(type(error).__name__)


def is_transient(exc: BaseException) -> bool:
    """Whether trying again later may succeed: connection failures, timeouts, HTTP 429 and 5xx, an unhealthy
    or lagging Solana node, database contention, an attempt's time limit, and ``TransientError``."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, JobError):
        return False
    if isinstance(exc, SolanaRpcException):  # solana-py wraps the HTTP failure
        return exc.__cause__ is not None and is_transient(exc.__cause__)
    if isinstance(exc, RPCException):
        return rpc_error_code(exc) in TRANSIENT_RPC_CODES
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500 or exc.response.status_code == 429
    return isinstance(exc, TRANSIENT_ERROR_TYPES)


def backoff_seconds(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """The wait after failed try ``attempt`` (1-based): exponential up to ``cap``, half fixed, half random."""
    ceiling = min(cap, base * 2.0 ** max(attempt - 1, 0))
    jitter: float = (rng or random).uniform(0, ceiling / 2)
    return ceiling / 2 + jitter


def scheduled_delay_s(schedule: Sequence[float], attempt: int, *, rng: random.Random | None = None) -> float | None:
    """The wait after failed try ``attempt`` (1-based) by a fixed schedule, ±20 % jitter; None: give up."""
    if attempt > len(schedule):
        return None
    return schedule[attempt - 1] * (rng or random).uniform(0.8, 1.2)


def _worth_another_try(exc: BaseException) -> bool:
    # A time limit ends the job's attempt, not just the call: it is the runtime's to retry.
    return is_transient(exc) and not isinstance(exc, SoftTimeLimitExceeded)


def _name(exc: BaseException) -> str:
    return type(exc).__name__


Describe = Callable[[BaseException], str]


def _policy(what: str, attempts: int, first_wait_s: float, describe: Describe) -> dict[str, Any]:
    def wait(state: RetryCallState) -> float:
        return backoff_seconds(state.attempt_number, base=first_wait_s, cap=CALL_BACKOFF_CAP_S)

    def retry(state: RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome is not None and state.outcome.failed else None
        return error is not None and _worth_another_try(error)

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        extra = {"call": what, "attempt": state.attempt_number, "error": describe(error) if error else None}
        log.warning("client.retry", extra=extra)

    return {
        "stop": stop_after_attempt(attempts),
        "wait": wait,
        "retry": retry,
        "before_sleep": before_sleep,
        "reraise": True,
    }


def retry_call(
    what: str, attempts: int, first_wait_s: float, call: Callable[[], T], *, describe: Describe = _name
) -> T:
    """Run ``call``, up to ``attempts`` tries while it fails transiently; the last failure is raised as it is.

    Each retry is logged as ``client.retry`` with ``describe(error)`` (by default the error's type: messages
    may carry an endpoint URL, and provider URLs carry API keys)."""
    return Retrying(**_policy(what, attempts, first_wait_s, describe))(call)


async def retry_async_call(
    what: str, attempts: int, first_wait_s: float, call: Callable[[], Awaitable[T]], *, describe: Describe = _name
) -> T:
    """:func:`retry_call` for a call that returns an awaitable."""

    async def attempt() -> T:  # tenacity awaits only what a coroutine function returns
        return await call()

    return await AsyncRetrying(**_policy(what, attempts, first_wait_s, describe))(attempt)
