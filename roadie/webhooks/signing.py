"""Endpoint signing secrets: made here, kept encrypted at rest, used to sign per Standard Webhooks.

A database dump holds only Fernet ciphertexts; the key comes from settings (or, where unset outside
production, a key file under ``ROADIE_HOME`` made on first use), so the API can sign but the dump
cannot.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import secrets
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from standardwebhooks.webhooks import Webhook

from roadie.settings import get_settings

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every secret, not a secret
KEY_FILE = "webhook-secret.key"


class SecretKeyMissing(RuntimeError):  # noqa: N818 - reads as the condition it reports
    """Production needs ROADIE_WEBHOOK_SECRET_KEYS: a key file on one host would not open secrets on another."""


def new_secret() -> str:
    """A signing secret as receivers configure it: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    settings = get_settings()
    if settings.webhook_secret_keys is not None:
        keys = [key.strip() for key in settings.webhook_secret_keys.get_secret_value().split(",") if key.strip()]
    elif settings.env == "production":
        raise SecretKeyMissing("set ROADIE_WEBHOOK_SECRET_KEYS (a Fernet key) to store webhook secrets")
    else:
        keys = [_local_key(settings.home / KEY_FILE)]
    return MultiFernet([Fernet(key) for key in keys])


def _local_key(path: Path) -> str:
    """The key file's key, made (readable by the owner only) if it does not exist yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as file:
        file.write(Fernet.generate_key().decode())
    return path.read_text().strip()


def seal(secret: str) -> bytes:
    return _fernet().encrypt(secret.encode())


def unseal(sealed: bytes) -> str:
    """The secret; InvalidToken when none of the configured keys made it (a key was dropped too early)."""
    return _fernet().decrypt(bytes(sealed)).decode()


def signature_header(secrets_: list[str], message_id: str, timestamp: dt.datetime, body: str) -> str:
    """``webhook-signature``: one ``v1,<base64>`` per live secret, space-separated (the spec's rotation form)."""
    return " ".join(Webhook(secret).sign(message_id, timestamp, body) for secret in secrets_)


__all__ = ["InvalidToken", "SecretKeyMissing", "new_secret", "seal", "signature_header", "unseal"]
