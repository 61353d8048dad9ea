"""Where a webhook may go: https to a public address, unless an operator allowed the host.

Checked twice: when an endpoint or a callback_url is registered (the URL's form), and at every
delivery (where the host resolves now). A delivery connects to the address it checked, not to a
second lookup's, so a DNS answer that changes in between (rebinding) cannot steer it inside.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import SplitResult, urlsplit, urlunsplit

from pydantic import Field

from roadie.settings import get_settings

MAX_URL_LENGTH = 2048
#: A job's, an upload's or a batch's ``callback_url`` field (its safety is checked by ``check_callback_url``).
CallbackUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="Also post this job's events here, signed with the client's default (oldest enabled) "
        "webhook endpoint's secret; https, or http to an allowed host. 422 when the client has no endpoint.",
    ),
]
#: Cloud metadata services answer on these even where they are not link-local (AWS's IPv6 one).
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrl(ValueError):  # noqa: N818 - reads as the condition it reports
    """A URL Roadie will not post to; the message says why, for the client."""


def allowed_host(host: str) -> bool:
    return host.lower() in {allowed.lower() for allowed in get_settings().webhook_allowed_hosts}


def check_url(url: str) -> str:
    """The URL if its form is acceptable (absolute https, or http to an allowed host; no credentials)."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"must be at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise UnsafeUrl("is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UnsafeUrl("must be an absolute https URL")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("must not carry credentials; the signature authenticates Roadie to the receiver")
    if parts.scheme == "http" and not allowed_host(parts.hostname):
        raise UnsafeUrl("must be https (plain http only to hosts in ROADIE_WEBHOOK_ALLOWED_HOSTS)")
    return url


def forbidden(address: IpAddress) -> bool:
    """Private, loopback, link-local, multicast, reserved or a metadata service: not a receiver's address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address in METADATA_ADDRESSES or not address.is_global or address.is_multicast


@dataclass(frozen=True)
class Target:
    """Where to connect for a URL: ``url`` names the checked address; the Host header and TLS's server
    name stay the URL's own."""

    url: str
    host_header: str
    server_name: str
    address: str


def resolve(url: str) -> Target:
    """Resolve the URL's host and check every address it has; UnsafeUrl if any is forbidden.

    OSError (a name that does not resolve) is left to the caller: it may resolve later.
    """
    parts = urlsplit(check_url(url))
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not allowed_host(host):
        refused = [address for address in addresses if forbidden(address)]
        if refused:
            raise UnsafeUrl(f"resolves to {refused[0]}, a private, loopback, link-local or metadata address")
    chosen = addresses[0]
    literal = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    pinned = SplitResult(parts.scheme, netloc, parts.path, parts.query, "")
    return Target(url=urlunsplit(pinned), host_header=parts.netloc, server_name=host, address=str(chosen))
