"""The API's HTTP server: uvicorn, with time limits on slow clients and a cap on connections.

uvicorn closes an idle keep-alive connection, but has no limit on how long a client may take to
send a request: a client that trickles its headers or its body, or opens a connection and sends
nothing, holds it for ever. :class:`SlowClientH11Protocol` closes a connection whose request
headers are not complete ``ROADIE_API_HEADER_TIMEOUT_S`` after they began (or after the
connection opened), and one whose body sends nothing for ``ROADIE_API_BODY_TIMEOUT_S``.
``ROADIE_API_MAX_CONCURRENCY`` caps connections and requests in flight: past it, uvicorn
answers 503. In production a reverse proxy does the same in front (``docs/api-server.md``).

The protocol reads uvicorn's ``H11Protocol`` state (``conn``, ``flow``, ``transport``, ``loop``);
``tests/test_slow_clients.py`` checks they are still there when uvicorn changes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from roadie.settings import get_settings


class SlowClientH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request headers and an idle limit for the body."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.header_timeout_s = settings.api_header_timeout_s
        self.body_timeout_s = settings.api_body_timeout_s
        self.header_deadline: asyncio.TimerHandle | None = None
        self.body_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()  # a connection that sends nothing is a request that never completes

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_client()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start on a pipelined request already received
        self._follow_client()

    def _follow_client(self) -> None:
        """Arm the deadline of what the client owes now: the rest of the headers, more body, or nothing."""
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE and self.conn.trailing_data[0]:  # a request has begun: its headers have a deadline
            self._arm_header_deadline()
        elif state is not h11.IDLE:
            self._cancel(header=True)
        self._cancel(body=True)
        if state is h11.SEND_BODY:  # each read restarts the body's idle limit
            self.body_deadline = self.loop.call_later(self.body_timeout_s, self._body_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel(header=True, body=True)
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self.header_deadline is None:
            self.header_deadline = self.loop.call_later(self.header_timeout_s, self._close, "headers")

    def _body_timed_out(self) -> None:
        self.body_deadline = None
        if self.flow.read_paused:  # the application is not reading the body yet: the client is not to blame
            self.body_deadline = self.loop.call_later(self.body_timeout_s, self._body_timed_out)
            return
        self._close("body")

    def _close(self, part: str) -> None:
        self.logger.info("api.slow_client_closed", extra={"part": part, "client": self.client})
        self._cancel(header=True, body=True)
        self.transport.close()

    def _cancel(self, *, header: bool = False, body: bool = False) -> None:
        if header and self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None
        if body and self.body_deadline is not None:
            self.body_deadline.cancel()
            self.body_deadline = None


def config(host: str, port: int, *, access_log: bool = True) -> uvicorn.Config:
    """The server's configuration; logging stays as :func:`roadie.logs.configure_logging` set it."""
    settings = get_settings()
    return uvicorn.Config(
        "api.app:app",
        host=host,
        port=port,
        http=SlowClientH11Protocol,
        limit_concurrency=settings.api_max_concurrency,
        timeout_keep_alive=5,
        access_log=access_log,
        log_config=None,
    )


def serve(host: str, port: int, *, access_log: bool = True) -> None:
    """Run the API until SIGINT or SIGTERM."""
    uvicorn.Server(config(host, port, access_log=access_log)).run()
