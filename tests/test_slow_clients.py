"""Slow clients cannot hold the API's connections: stalled headers and bodies are cut off, the rest is served."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress

import h11
import httpx
import pytest
import uvicorn
from uvicorn.server import ServerState

from api.server import SlowClientH11Protocol
from tests.conftest import Processes, free_port
from tests.helpers import api_healthy

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.5
MAX_CONCURRENCY = 80
STALLED = 50  # a bounded slowloris from 127.0.0.1


@pytest.fixture(scope="module")
def strict_api(processes: Processes) -> Iterator[str]:
    """``roadie api`` with short timeouts and a low connection cap, so the test takes seconds."""
    port = free_port()
    env = os.environ | {
        "ROADIE_API_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "ROADIE_API_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "ROADIE_API_MAX_CONCURRENCY": str(MAX_CONCURRENCY),
    }
    api = processes.api(port, env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not api_healthy(url):
        assert time.monotonic() < deadline, api.log()
        time.sleep(0.1)
    yield url
    api.stop()


def _stalled(url: str, stack: ExitStack, request: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = stack.enter_context(socket.create_connection((host, int(port)), timeout=10))
    if request:
        sock.sendall(request)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes the connection (EOF or reset) within the socket's timeout, answered or not."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def _healthz_seconds(url: str) -> float:
    started = time.monotonic()
    response = httpx.get(f"{url}/healthz", timeout=5)
    assert response.status_code == 200
    return time.monotonic() - started


def test_stalled_headers_and_bodies_are_closed_while_healthz_stays_fast(strict_api: str) -> None:
    partial_headers = b"POST /v1/jobs HTTP/1.1\r\nHost: roadie\r\nContent-Type: application/json\r\n"
    partial_body = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: roadie\r\nAuthorization: Bearer x\r\n"
        b'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"type": '
    )
    with ExitStack() as stack:
        silent = [_stalled(strict_api, stack, b"") for _ in range(STALLED // 5)]
        headers = [_stalled(strict_api, stack, partial_headers) for _ in range(STALLED * 2 // 5)]
        bodies = [_stalled(strict_api, stack, partial_body) for _ in range(STALLED * 2 // 5)]
        opened = time.monotonic()
        trickle = _stalled(strict_api, stack, b"GET /healthz HTTP/1.1\r\n")
        latencies = []
        while time.monotonic() - opened < HEADER_TIMEOUT_S * 0.8:  # a byte at a time cannot extend the deadline
            trickle.sendall(b"X")
            latencies.append(_healthz_seconds(strict_api))
            time.sleep(0.1)

        for sock in [*silent, *headers, *bodies, trickle]:
            assert _closed_by_server(sock)
        closed_after = time.monotonic() - opened
        latencies.append(_healthz_seconds(strict_api))

    assert max(latencies) < 0.5, latencies
    assert closed_after < BODY_TIMEOUT_S + 3


def test_past_the_connection_cap_requests_get_503_and_are_served_again_once_it_frees(strict_api: str) -> None:
    with ExitStack() as stack:
        for _ in range(MAX_CONCURRENCY):
            _stalled(strict_api, stack, b"GET /healthz HTTP/1.1\r\n")
        time.sleep(0.2)
        refused = httpx.get(f"{strict_api}/healthz", timeout=5)
        time.sleep(HEADER_TIMEOUT_S + 0.5)
        served = httpx.get(f"{strict_api}/healthz", timeout=5)

    assert refused.status_code == 503
    assert served.status_code == 200


def test_the_uvicorn_internals_the_protocol_reads_are_still_there() -> None:
    """The protocol reads uvicorn's H11Protocol state: a uvicorn upgrade that changes it fails here first."""

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("no request completes in this test")

    async def check() -> None:
        config = uvicorn.Config(app, http=SlowClientH11Protocol, log_config=None)
        config.load()
        made: list[SlowClientH11Protocol] = []

        def protocol() -> SlowClientH11Protocol:
            made.append(SlowClientH11Protocol(config=config, server_state=ServerState(), app_state={}))
            return made[-1]

        server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
        _, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)
        (connection,) = made
        assert isinstance(connection.conn, h11.Connection)
        assert connection.conn.their_state is h11.IDLE
        assert connection.conn.trailing_data[0]
        assert connection.flow.read_paused is False
        assert connection.loop is asyncio.get_running_loop()
        assert connection.header_deadline is not None
        assert callable(connection.on_response_complete)
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()
        server.close()
        await server.wait_closed()

    asyncio.run(check())
