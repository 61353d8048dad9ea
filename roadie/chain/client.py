"""The chain client: solana-py's ``AsyncClient`` over one or more RPC endpoints, with a commitment, timeouts,
retries and failover.

Every request goes through :func:`roadie.retrying.retry_async_call`: what :func:`roadie.retrying.is_transient`
calls transient (connection errors, timeouts, HTTP 429 and 5xx, an unhealthy or lagging node) is tried
again with backoff and jitter; when the tries run out the caller gets :class:`RpcUnavailable` (a
``TransientError``, so the job is retried by the platform and finally fails with the RPC error). Every
other RPC error is a :class:`RpcRejected` and is not retried. Messages name the RPC method and the
error, never the URL (provider URLs often carry an API key); an endpoint is named by its position in
``ROADIE_SOLANA_RPC_URLS``.

Failover: each try goes to the endpoints in order of health (healthy ones in the configured order). One that
fails transiently, or answers something that is not a JSON-RPC response, is passed over for
``ROADIE_SOLANA_RPC_UNHEALTHY_S`` and the same try moves on to the next at once; only when every endpoint is
resting does the one that rests the shortest get tried. Health is kept per process, so it outlives the
short-lived ``Chain`` of one job. ``sendTransaction`` fails over like any call: the same signed bytes (one
signature) may reach several endpoints, which the cluster deduplicates. Reads that must agree with each
other (a journal check, an indexer tick) go through :meth:`Chain.consistent`: one endpoint for all of them.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment
from solana.rpc.core import RPCException
from solana.rpc.types import TxOpts
from solders.account import Account
from solders.errors import SerdeJSONError
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.rpc.errors import SendTransactionPreflightFailureMessage
from solders.rpc.responses import RpcSimulateTransactionResult
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionErrorFieldless, TransactionStatus

from roadie.jobs.errors import PermanentError, TransientError
from roadie.retrying import is_transient, retry_async_call, rpc_error_code
from roadie.settings import Settings, get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

#: When each endpoint (by URL) may be tried again after failing: per process, across jobs.
_resting_until: dict[str, float] = {}


class RpcUnavailable(TransientError):  # noqa: N818 - reads as the condition it reports
    """The RPC endpoint kept failing (down, timing out, rate limiting) after every try."""

    code = "rpc_unavailable"


class EndpointLost(RpcUnavailable):
    """The one endpoint a consistent view reads from failed: its reads are repeated on another
    (:meth:`Chain.consistently`), not mixed with another's."""


class RpcRejected(PermanentError):  # noqa: N818 - reads as the condition it reports
    """The RPC endpoint answered with an error retrying cannot fix."""

    code = "rpc_error"


class RpcBadAnswer(TransientError):  # noqa: N818 - reads as the condition it reports
    """The RPC endpoint answered something that is not the documented response (a broken node or proxy):
    retried later, as another try (or endpoint) may answer properly."""

    code = "rpc_bad_answer"


class _PrioritizationFee(BaseModel):
    model_config = ConfigDict(strict=True)

    slot: int = Field(ge=0)
    prioritizationFee: int = Field(ge=0)  # noqa: N815 - the RPC's field name


_PRIORITIZATION_FEES = TypeAdapter(list[_PrioritizationFee])


@dataclass(frozen=True)
class _RawRequest:
    """A JSON-RPC request solana-py has no method for, in the shape its provider sends."""

    method: str
    params: list[Any]

    def to_json(self) -> str:
        return json.dumps({"jsonrpc": "2.0", "id": 1, "method": self.method, "params": self.params})


def describe(exc: BaseException) -> str:
    """A short account of an RPC failure, without the endpoint URL."""
    cause = exc.__cause__ if isinstance(exc, SolanaRpcException) and exc.__cause__ else exc
    if isinstance(cause, httpx.HTTPStatusError):
        return f"HTTP {cause.response.status_code} {cause.response.reason_phrase}"
    if isinstance(cause, httpx.TimeoutException):
        return f"timed out ({type(cause).__name__})"
    if isinstance(cause, httpx.TransportError):
        return f"connection failed ({type(cause).__name__})"
    if isinstance(cause, RPCException):
        error = cause.args[0] if cause.args else cause
        code = rpc_error_code(cause)
        message = getattr(error, "message", str(error))
        return f"RPC error {code}: {message}" if code is not None else f"RPC error: {message}"
    return f"{type(cause).__name__}: {cause}"


@dataclass(frozen=True)
class SendResult:
    """What ``sendTransaction`` said: ``sent``, ``already_processed``, ``blockhash_not_found`` or ``rejected``
    (the preflight simulation failed; ``error`` says why)."""

    outcome: str
    error: str | None = None


@dataclass
class Endpoint:
    """One RPC endpoint; ``number`` (its 1-based position in the list) names it in messages, never its URL.

    Its client is made on first use: making one costs some milliseconds of CPU (httpx builds an SSL context),
    and a job's chain need not pay that for endpoints it never asks."""

    number: int
    url: str
    commitment: Commitment
    timeout_s: float
    _client: AsyncClient | None = None

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            self._client = AsyncClient(self.url, commitment=self.commitment, timeout=self.timeout_s)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


class Chain:
    """The RPC endpoints; every call goes through :meth:`call` (retries, failover) with the configured commitment."""

    def __init__(self, settings: Settings | None = None, url: str | None = None) -> None:
        self.settings = settings or get_settings()
        self.commitment: Commitment = Commitment(self.settings.solana_commitment)
        urls = [url] if url else self.settings.solana_rpc_urls
        timeout = self.settings.solana_rpc_timeout_s
        self.endpoints = [Endpoint(number, url, self.commitment, timeout) for number, url in enumerate(urls, 1)]
        self._consistent = False
        self._pinned: Endpoint | None = None

    async def close(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.close()

    def consistent(self) -> Chain:
        """A view of this chain whose calls all go to one endpoint, the first that answers it, so its reads
        agree with each other (a lagging endpoint cannot contradict another's answer). Each view chooses
        afresh; it shares this chain's connections (close this chain, not the view). When there are several
        endpoints and the view's own fails, its call raises :class:`EndpointLost` at once."""
        view = copy.copy(self)
        view._consistent, view._pinned = True, None
        return view

    async def consistently(self, reads: Callable[[Chain], Awaitable[T]]) -> T:
        """``reads`` through one consistent view; if its endpoint is lost midway, all of them again through a
        new view (on the next healthy endpoint), up to once per endpoint."""
        for _ in range(len(self.endpoints) - 1):
            try:
                return await reads(self.consistent())
            except EndpointLost as lost:
                log.warning("chain.rpc_reads_repeated", extra={"reason": str(lost)})
        return await reads(self.consistent())

    def _ranked(self) -> list[Endpoint]:
        """The pinned endpoint; else the healthy ones in order, or the one whose rest ends first."""
        if self._pinned is not None:
            return [self._pinned]
        now = time.monotonic()
        healthy = [e for e in self.endpoints if _resting_until.get(e.url, 0.0) <= now]
        return healthy or [min(self.endpoints, key=lambda e: _resting_until.get(e.url, 0.0))]

    async def _try(self, method: str, request: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """One try: the endpoints in order of health, moving on at once past one that fails transiently."""
        failure: BaseException | None = None
        for endpoint in self._ranked():
            try:
                answer = await request(endpoint.client)
            except SerdeJSONError as exc:
                failure = RpcBadAnswer(
                    f"endpoint {endpoint.number} answered something that is not a JSON-RPC response: {exc}"
                )
            except (SolanaRpcException, RPCException, httpx.HTTPError) as exc:
                if not is_transient(exc):  # the endpoint is well; the request is not
                    raise
                failure = exc
            else:
                _resting_until.pop(endpoint.url, None)
                if self._consistent:
                    self._pinned = endpoint
                return answer
            self._rest(endpoint, method, failure)
        assert failure is not None  # _ranked never returns an empty list
        raise failure

    def _rest(self, endpoint: Endpoint, method: str, failure: BaseException) -> None:
        if len(self.endpoints) == 1:  # nothing to pass it over for; the retries log the failure
            return
        rest_s = self.settings.solana_rpc_unhealthy_s
        _resting_until[endpoint.url] = time.monotonic() + rest_s
        extra = {"endpoint": endpoint.number, "call": method, "error": describe(failure), "rest_s": rest_s}
        log.warning("chain.rpc_endpoint_unhealthy", extra=extra)

    async def call(self, method: str, request: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """Run one RPC request, failing over between endpoints and retrying transient failures with backoff."""
        attempts = self.settings.solana_rpc_attempts
        if self._pinned is not None and len(self.endpoints) > 1:
            return await self._pinned_call(method, request)
        try:
            return await retry_async_call(
                method,
                attempts,
                self.settings.solana_rpc_backoff_s,
                lambda: self._try(method, request),
                describe=describe,
            )
        except RpcBadAnswer as exc:
            raise RpcBadAnswer(f"{method} failed {attempts} times: {exc}") from None
        except (SolanaRpcException, RPCException, httpx.HTTPError) as exc:
            if is_transient(exc):
                raise RpcUnavailable(f"{method} failed {attempts} times: {describe(exc)}") from None
            raise RpcRejected(f"{method}: {describe(exc)}") from None

    async def _pinned_call(self, method: str, request: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """One try on the view's endpoint: when it fails, the reads move to another endpoint as a whole."""
        try:
            return await self._try(method, request)
        except RpcBadAnswer as exc:
            raise EndpointLost(f"{method}: {exc}") from None
        except (SolanaRpcException, RPCException, httpx.HTTPError) as exc:
            if is_transient(exc):
                raise EndpointLost(f"{method}: {describe(exc)}") from None
            raise RpcRejected(f"{method}: {describe(exc)}") from None

    # The calls Roadie makes --------------------------------------------------------------------

    async def latest_blockhash(self) -> tuple[Hash, int]:
        response = await self.call("getLatestBlockhash", lambda c: c.get_latest_blockhash(self.commitment))
        return response.value.blockhash, response.value.last_valid_block_height

    async def block_height(self, commitment: Commitment | None = None) -> int:
        return (await self.call("getBlockHeight", lambda c: c.get_block_height(commitment or self.commitment))).value

    async def account(self, address: Pubkey, commitment: Commitment | None = None) -> Account | None:
        response = await self.call("getAccountInfo", lambda c: c.get_account_info(address, commitment))
        return response.value

    async def accounts(self, addresses: list[Pubkey]) -> list[Account | None]:
        found: list[Account | None] = []
        for start in range(0, len(addresses), 100):  # getMultipleAccounts takes at most 100 keys
            chunk = addresses[start : start + 100]
            request = partial(AsyncClient.get_multiple_accounts, pubkeys=chunk)
            found.extend((await self.call("getMultipleAccounts", request)).value)
        return found

    async def statuses(self, signatures: list[Signature]) -> list[TransactionStatus | None]:
        """Statuses with the whole history searched, so an old landed signature is never taken as unknown."""
        found: list[TransactionStatus | None] = []
        for start in range(0, len(signatures), 256):  # getSignatureStatuses takes at most 256
            chunk = signatures[start : start + 256]
            request = partial(AsyncClient.get_signature_statuses, signatures=chunk, search_transaction_history=True)
            response = await self.call("getSignatureStatuses", request)
            found.extend(response.value)
        return found

    async def send(self, raw: bytes) -> SendResult:
        """Send signed bytes with preflight; a duplicate or an expired blockhash is an outcome, not an error."""
        options = TxOpts(skip_confirmation=True, preflight_commitment=self.commitment)

        async def request(client: AsyncClient) -> SendResult:
            try:
                await client.send_raw_transaction(raw, options)
            except RPCException as exc:
                error = exc.args[0] if exc.args else None
                if not isinstance(error, SendTransactionPreflightFailureMessage):
                    raise
                if error.data.err == TransactionErrorFieldless.AlreadyProcessed:
                    return SendResult("already_processed")
                if error.data.err == TransactionErrorFieldless.BlockhashNotFound:
                    return SendResult("blockhash_not_found")
                return SendResult("rejected", f"{error.data.err}: {' | '.join((error.data.logs or [])[-3:])}")
            return SendResult("sent")

        return await self.call("sendTransaction", request)

    async def recent_prioritization_fees(self, writable: list[Pubkey]) -> list[int]:
        """``getRecentPrioritizationFees``: the per-slot fees (micro-lamports per unit) to write these accounts."""

        async def request(client: AsyncClient) -> str:
            body = _RawRequest("getRecentPrioritizationFees", [[str(key) for key in writable[:128]]])
            return await client._provider.make_request_unparsed(body)  # type: ignore[arg-type]  # no solders type

        raw = await self.call("getRecentPrioritizationFees", request)
        try:
            answer = json.loads(raw)
            if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
                error = answer["error"]
                raise RpcRejected(f"getRecentPrioritizationFees: RPC error {error.get('code')}: {error.get('message')}")
            entries = _PRIORITIZATION_FEES.validate_python(answer["result"])
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            raise RpcBadAnswer(
                f"getRecentPrioritizationFees answered an unreadable result ({type(exc).__name__})"
            ) from None
        return [entry.prioritizationFee for entry in entries]

    async def simulate(self, tx: VersionedTransaction) -> RpcSimulateTransactionResult:
        """``simulateTransaction`` without signature checks, at the configured commitment."""
        request = partial(AsyncClient.simulate_transaction, txn=tx, commitment=self.commitment)
        try:
            return (await self.call("simulateTransaction", request)).value
        except SerdeJSONError as exc:
            raise RpcBadAnswer(f"simulateTransaction answered an unreadable result: {exc}") from None

    async def fee_paid(self, signature: Signature) -> int | None:
        """The lamports a landed transaction paid (``meta.fee``), or None if the endpoint does not show it yet."""
        request = partial(
            AsyncClient.get_transaction,
            tx_sig=signature,
            commitment=Commitment("confirmed"),
            max_supported_transaction_version=0,
        )
        try:
            found = (await self.call("getTransaction", request)).value
        except SerdeJSONError as exc:
            raise RpcBadAnswer(f"getTransaction answered an unreadable result: {exc}") from None
        meta = None if found is None else found.transaction.meta
        return None if meta is None else meta.fee

    async def rent_exempt_minimum(self, size: int) -> int:
        request = partial(AsyncClient.get_minimum_balance_for_rent_exemption, usize=size)
        return (await self.call("getMinimumBalanceForRentExemption", request)).value

    async def airdrop(self, address: Pubkey, lamports: int) -> Signature:
        return (await self.call("requestAirdrop", lambda c: c.request_airdrop(address, lamports))).value


@asynccontextmanager
async def connect(settings: Settings | None = None, url: str | None = None) -> AsyncIterator[Chain]:
    chain = Chain(settings, url)
    try:
        yield chain
    finally:
        await chain.close()
