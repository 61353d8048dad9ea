"""``roadie flower``: Flower on the platform's broker, never without authentication.

Credentials reach Flower through its ``FLOWER_*`` environment variables, not its command line,
so they do not show in ``ps``; ``--conf`` points at an empty file so that a stray
``flowerconfig.py`` in the working directory cannot switch authentication off.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import SecretStr

from roadie.settings import Settings

#: Flower's own variables for what Roadie configures from its settings; inherited values are dropped.
MANAGED_ENV = (
    "FLOWER_BASIC_AUTH",
    "FLOWER_AUTH",
    "FLOWER_AUTH_PROVIDER",
    "FLOWER_OAUTH2_KEY",
    "FLOWER_OAUTH2_SECRET",
    "FLOWER_OAUTH2_REDIRECT_URI",
    "FLOWER_UNAUTHENTICATED_API",
    "FLOWER_ADDRESS",
    "FLOWER_PORT",
    "FLOWER_CONF",
)
#: Flower options that come from settings only: one source of truth, and no secrets in argv.
RESERVED_OPTIONS = frozenset(
    {
        "basic_auth",
        "auth",
        "auth_provider",
        "oauth2_key",
        "oauth2_secret",
        "oauth2_redirect_uri",
        "address",
        "port",
        "unix_socket",
        "conf",
        "broker",
    }
)

_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
_LOCAL = r"[A-Za-z0-9!#%&'+/=_`~.-]+"
#: One exact address.
_ADDRESS = re.compile(rf"{_LOCAL}@{_DOMAIN}")
#: Any local part at one literal domain: Flower turns the single ``.*`` into a local-part character class.
_LOCAL_WILDCARD = re.compile(rf"(?:{_LOCAL})?\.\*(?:{_LOCAL})?@{_DOMAIN}")
_REGEX_SYNTAX = re.compile(r"[\\^$()\[\]]")


class FlowerConfigError(ValueError):
    """The Flower settings are missing or malformed; the message never contains a secret."""


@dataclass(frozen=True)
class FlowerLaunch:
    command: list[str]
    env: dict[str, str]


def basic_auth_credentials(secret: SecretStr | None) -> list[str]:
    """``user:password`` entries of ROADIE_FLOWER_BASIC_AUTH (commas separate users, as in Flower)."""
    raw = secret.get_secret_value().strip() if secret is not None else ""
    if not raw:
        return []
    entries = [entry.strip() for entry in raw.split(",")]
    for number, entry in enumerate(entries, start=1):
        user, colon, password = entry.partition(":")
        if not colon or not user or not password:
            raise FlowerConfigError(
                f"ROADIE_FLOWER_BASIC_AUTH: entry {number} of {len(entries)} is not user:password "
                "(users are separated by commas, so a password cannot contain one)"
            )
    return entries


def check_email_pattern(pattern: str) -> None:
    """Accept only what Flower 2 matches safely against the whole OAuth e-mail address.

    Flower 2 (the fix for CVE-2022-30034) escapes the pattern and matches it against the entire
    address: either ``a@example.com|b@example.com`` (exact addresses) or one ``.*`` in the local
    part, ``.*@example.com``. Regex anchors or backslashes, written for Flower 1's unanchored
    ``re.match``, would be taken literally and lock everyone out; a wildcard domain would let in
    anyone who can register an address there.
    """
    hint = "write exact addresses separated by | or one wildcard local part such as .*@example.com"
    if _REGEX_SYNTAX.search(pattern):
        raise FlowerConfigError(
            "ROADIE_FLOWER_AUTH: Flower 2 matches the whole address and takes regex syntax (^ $ \\ ( ) [ ]) "
            f"literally; {hint}"
        )
    if "*" in pattern:
        if "|" in pattern or pattern.count("*") != 1 or not _LOCAL_WILDCARD.fullmatch(pattern):
            raise FlowerConfigError(f"ROADIE_FLOWER_AUTH: {pattern!r} is not a safe pattern; {hint}")
    elif not all(_ADDRESS.fullmatch(address) for address in pattern.split("|")):
        raise FlowerConfigError(f"ROADIE_FLOWER_AUTH: {pattern!r} is not a list of e-mail addresses; {hint}")


def oauth_env(settings: Settings) -> dict[str, str]:
    """Flower's OAuth variables from the ROADIE_FLOWER_AUTH* settings; empty when OAuth is off."""
    pattern = (settings.flower_auth or "").strip()
    if not pattern:
        return {}
    check_email_pattern(pattern)
    secret = settings.flower_oauth2_secret.get_secret_value() if settings.flower_oauth2_secret else ""
    values = {
        "ROADIE_FLOWER_AUTH_PROVIDER": ("FLOWER_AUTH_PROVIDER", settings.flower_auth_provider or ""),
        "ROADIE_FLOWER_OAUTH2_KEY": ("FLOWER_OAUTH2_KEY", settings.flower_oauth2_key or ""),
        "ROADIE_FLOWER_OAUTH2_SECRET": ("FLOWER_OAUTH2_SECRET", secret),
        "ROADIE_FLOWER_OAUTH2_REDIRECT_URI": ("FLOWER_OAUTH2_REDIRECT_URI", settings.flower_oauth2_redirect_uri or ""),
    }
    missing = [name for name, (_, value) in values.items() if not value.strip()]
    if missing:
        raise FlowerConfigError(f"ROADIE_FLOWER_AUTH is set, so OAuth also needs {', '.join(missing)}")
    return {"FLOWER_AUTH": pattern} | {flower: value.strip() for flower, value in values.values()}


def authentication_configured(settings: Settings) -> bool:
    """Whether Flower has credentials to start with (``roadie up`` runs it only then)."""
    basic = settings.flower_basic_auth.get_secret_value().strip() if settings.flower_basic_auth else ""
    return bool(basic or (settings.flower_auth or "").strip())


def flower_launch(
    settings: Settings, extra_options: Sequence[str] = (), environ: Mapping[str, str] | None = None
) -> FlowerLaunch:
    """The Flower command and environment, or FlowerConfigError when it would run unauthenticated."""
    credentials = basic_auth_credentials(settings.flower_basic_auth)
    oauth = oauth_env(settings)
    if not credentials and not oauth:
        raise FlowerConfigError(
            "refusing to start Flower without authentication: set ROADIE_FLOWER_BASIC_AUTH=user:password"
            "[,user2:password2], or OAuth with ROADIE_FLOWER_AUTH and ROADIE_FLOWER_OAUTH2_* (see the README)"
        )
    for option in extra_options:
        name = option.lstrip("-").partition("=")[0].replace("-", "_")
        if name in RESERVED_OPTIONS:
            raise FlowerConfigError(
                f"--{name} is set from the ROADIE_FLOWER_* settings and the broker URL, not on the command line"
            )
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if k not in MANAGED_ENV}
    if credentials:
        env["FLOWER_BASIC_AUTH"] = ",".join(credentials)
    env.update(oauth)
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.app",
        "flower",
        f"--address={settings.flower_address}",
        f"--port={settings.flower_port}",
        f"--conf={os.devnull}",
        *extra_options,
    ]
    return FlowerLaunch(command, env)


def exec_flower(settings: Settings, extra_options: Sequence[str] = ()) -> None:
    """Replace this process with Flower (signals and exit status are Flower's own)."""
    launch = flower_launch(settings, extra_options)
    os.execve(launch.command[0], launch.command, launch.env)  # noqa: S606 - our own interpreter, fixed arguments
