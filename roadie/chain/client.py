"""The chain client: solana-py's ``AsyncClient`` with a commitment, timeouts and retries.

Every request goes through :func:`roadie.retrying.retry_async_call`: what :func:`roadie.retrying.is_transient`
calls transient (connection errors, timeouts, HTTP 429 and 5xx, an unhealthy or lagging node) is tried
again with backoff and jitter; when the tries run out the caller gets :class:`RpcUnavailable` (a
``TransientError``, so the job is retried by the platform and finally fails with the RPC error). Every
other RPC error is a :class:`RpcRejected` and is not retried. Messages name the RPC method and the
error, never the URL (provider URLs often carry an API key).
"""

from __future__ import annotations

import json
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

T = TypeVar("T")


class RpcUnavailable(TransientError):  # noqa: N818 - reads as the condition it reports
    """The RPC endpoint kept failing (down, timing out, rate limiting) after every try."""

    code = "rpc_unavailable"


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


class Chain:
    """One RPC endpoint; every call goes through :meth:`call` (retries) with the configured commitment."""

    def __init__(self, settings: Settings | None = None, url: str | None = None) -> None:
        self.settings = settings or get_settings()
        self.commitment: Commitment = Commitment(self.settings.solana_commitment)
        self.client = AsyncClient(
            url or self.settings.solana_rpc_url, commitment=self.commitment, timeout=self.settings.solana_rpc_timeout_s
        )

    async def close(self) -> None:
        await self.client.close()

    async def call(self, method: str, request: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """Run one RPC request, retrying transient failures with backoff."""
        attempts = self.settings.solana_rpc_attempts
        try:
            return await retry_async_call(
                method, attempts, self.settings.solana_rpc_backoff_s, lambda: request(self.client), describe=describe
            )
        except (SolanaRpcException, RPCException, httpx.HTTPError) as exc:
            if is_transient(exc):
                raise RpcUnavailable(f"{method} failed {attempts} times: {describe(exc)}") from None
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
