"""The platform keypair: read from a Solana CLI JSON file, never logged, never returned.

solders' ``Keypair`` prints its secret in ``repr`` and ``str``; :class:`PlatformKeypair` wraps it so
that an accidental log line or error message shows only the public key.

Keypairs Roadie needs later (an NFT's mint, the local reward mint) are derived from the platform
secret with HMAC-SHA256, so no further secret is ever stored: the same track always gets the same
mint address, and a rebuilt mint transaction can never create a second mint.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from roadie.jobs.errors import PermanentError


class KeypairError(PermanentError):
    code = "keypair_invalid"


class PlatformKeypair:
    """The platform's signer; its repr shows only the public key."""

    __slots__ = ("_keypair",)

    def __init__(self, keypair: Keypair) -> None:
        self._keypair = keypair

    @property
    def pubkey(self) -> Pubkey:
        return self._keypair.pubkey()

    @property
    def signer(self) -> Keypair:
        """For signing transactions only: never log or store it."""
        return self._keypair

    def derive(self, purpose: str) -> Keypair:
        """A keypair of its own for ``purpose``, reproducible from the platform secret alone."""
        seed = hmac.new(bytes(self._keypair.secret()), purpose.encode(), hashlib.sha256).digest()
        return Keypair.from_seed(seed)

    def __repr__(self) -> str:
        return f"PlatformKeypair({self.pubkey})"

    __str__ = __repr__


def load_keypair(path: Path) -> PlatformKeypair:
    """Read a Solana CLI keypair file (a JSON array of 64 bytes); errors name the file, never its content."""
    try:
        raw = json.loads(path.read_text())
        if not (isinstance(raw, list) and len(raw) == 64 and all(isinstance(b, int) and 0 <= b <= 255 for b in raw)):
            raise ValueError("not a JSON array of 64 bytes")
        keypair = Keypair.from_bytes(bytes(raw))
    except FileNotFoundError:
        raise KeypairError(f"keypair file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        reason = "not a JSON array of 64 bytes" if isinstance(exc, ValueError) else type(exc).__name__
        raise KeypairError(f"keypair file {path} is unreadable: {reason}") from None
    return PlatformKeypair(keypair)


def create_keypair_file(path: Path) -> PlatformKeypair:
    """Write a new keypair readable by its owner only (what ``solana-keygen new`` does); keep an existing one."""
    if path.exists():
        return load_keypair(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keypair = Keypair()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(list(bytes(keypair)), file)
    return PlatformKeypair(keypair)
