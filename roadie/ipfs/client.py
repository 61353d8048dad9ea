"""The one place Roadie talks to an IPFS node's RPC API (Kubo's wire format), so the library can be swapped.

Rules learnt the hard way: the client is constructed directly, never with
``connect()``, whose version gate refuses every current node; every call has a timeout, since a
``pin add`` of a block the node lacks waits for the network forever; adds ask for CIDv1 in base32 with
raw leaves and Kubo's default chunker, so a CID equals the one ``ipfs add --cid-version=1`` prints for
the same bytes; ``Size`` is an int on js-ipfs and a string on Kubo. Connection errors and timeouts are
retried with backoff (:func:`roadie.retrying.retry_call`); when the node stays away the caller gets a
:class:`TransientError`, so the job is retried later, and a node that answers with an error gives a
:class:`PermanentError`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import ipfshttpclient
from ipfshttpclient import exceptions as ipfs_errors

from roadie.jobs.errors import PermanentError, TransientError
from roadie.retrying import is_transient, retry_call
from roadie.settings import get_settings

T = TypeVar("T")

#: js-ipfs answers CIDv1 in base58btc unless asked for base32.
BASE32 = {"cid-base": "base32"}
#: Kubo's `ipfs add` defaults, spelled out so a node configured otherwise still gives Kubo's CIDs.
ADD_OPTIONS: dict[str, Any] = {
    "cid_version": 1,
    "raw_leaves": True,
    "chunker": "size-262144",
    "opts": {**BASE32, "hash": "sha2-256"},
}
#: The first wait between two tries of a call (it doubles, up to roadie.retrying.CALL_BACKOFF_CAP_S).
FIRST_RETRY_WAIT_S = 0.2


@dataclass(frozen=True)
class Added:
    """What the node stored: the root CID (v1, base32) and the DAG's cumulative size in bytes."""

    cid: str
    dag_size: int


class IpfsNode:
    """A node's RPC API behind the few calls Roadie makes, each with a timeout and retries."""

    def __init__(self, addr: str, *, timeout_s: float, attempts: int) -> None:
        self.addr = addr
        self.timeout_s = timeout_s
        self.attempts = attempts
        # 1 MiB multipart writes: the default 4 KiB ones made adds of a few MiB 2-3x slower.
        self._client = ipfshttpclient.Client(addr, timeout=timeout_s, session=True, chunk_size=1 << 20)

    def close(self) -> None:
        self._client.close()

    def _call(self, what: str, call: Callable[[], T]) -> T:
        try:
            return retry_call(f"ipfs {what}", self.attempts, FIRST_RETRY_WAIT_S, call)
        except ipfs_errors.Error as exc:
            if is_transient(exc):
                raise TransientError(
                    f"IPFS node at {self.addr} did not answer {what} ({self.attempts} tries): {exc}",
                    code="ipfs_unavailable",
                ) from exc
            raise PermanentError(f"IPFS node at {self.addr} refused {what}: {exc}", code="ipfs_rejected") from exc

    def version(self) -> dict[str, Any]:
        return dict(self._call("version", lambda: self._client.version(timeout=self.timeout_s)))

    def add_file(self, path: Path, *, pin: bool = True) -> Added:
        """Add (and by default pin) a file, streamed from disk."""

        def add() -> Any:
            with path.open("rb") as stream:
                return self._client.add(stream, pin=pin, timeout=self.timeout_s, **ADD_OPTIONS)

        return _added(self._call(f"add {path.name}", add))

    def add_bytes(self, data: bytes, *, pin: bool = True) -> Added:
        return _added(
            self._call(
                "add", lambda: self._client.add(io.BytesIO(data), pin=pin, timeout=self.timeout_s, **ADD_OPTIONS)
            )
        )

    def cat(self, cid: str) -> bytes:
        return bytes(self._call(f"cat {cid}", lambda: self._client.cat(cid, timeout=self.timeout_s)))

    def pin(self, cid: str) -> None:
        """Pin recursively; pinning a pinned CID is a no-op."""
        self._call(f"pin add {cid}", lambda: self._client.pin.add(cid, timeout=self.timeout_s))

    def is_pinned(self, cid: str) -> bool:
        """Whether ``pin ls`` lists the CID as pinned recursively (the node answers an error when it is not)."""
        try:
            listed = self._call(
                f"pin ls {cid}",
                lambda: self._client.pin.ls(cid, type="recursive", opts=BASE32, timeout=self.timeout_s),
            )
        except PermanentError as exc:
            if "not pinned" in str(exc):
                return False
            raise
        return cid in listed["Keys"]

    def unpin(self, cid: str) -> None:
        """Remove a recursive pin; a CID that is not pinned is already released."""
        try:
            self._call(f"pin rm {cid}", lambda: self._client.pin.rm(cid, timeout=self.timeout_s))
        except PermanentError as exc:
            if "not pinned" not in str(exc):
                raise


def _added(response: Any) -> Added:
    cid = str(response["Hash"])
    if not cid.startswith("b"):
        raise PermanentError(f"IPFS node answered a CID that is not base32: {cid}", code="ipfs_rejected")
    return Added(cid=cid, dag_size=int(response["Size"]))


@lru_cache(maxsize=1)
def ipfs() -> IpfsNode:
    """This process's client of the configured node (a forked child makes its own, see below)."""
    settings = get_settings()
    return IpfsNode(settings.ipfs_api_addr, timeout_s=settings.ipfs_timeout_s, attempts=settings.ipfs_call_attempts)


# A prefork pool child must not share its parent's HTTP connection: forget the client after a fork.
os.register_at_fork(after_in_child=ipfs.cache_clear)
