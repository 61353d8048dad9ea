"""A worker outlives a network cut to RabbitMQ and consumes again soon after it heals, without a human.

The cut is a TCP proxy between the worker and the broker that carries nothing while cut, as a dead
link does, and each end still believes its connection is open: the shared RabbitMQ service is never
stopped. Runs on RabbitMQ only; ``tests/test_rabbitmq.py`` runs it in a session of its own on a vhost.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from roadie.processes import POOLS, ProcessGroup
from roadie.supervisor import Supervisor
from tests.conftest import BROKER_URL, ON_REDIS, ROOT
from tests.helpers import submit, wait_for_job

CUT_S = 30


class Link:
    """A TCP proxy to ``upstream`` that can be cut and healed, as the route of the worker's host can.

    A cut ends the worker's side of every connection at once (its host has no route: it notices and
    reconnects), and refuses new connections until the heal. The broker's side hears nothing, ever: to
    the broker the worker has gone silent, and only its heartbeat check frees the connection and the
    exclusive queues it holds, which is what made a reconnecting worker fail with ``ResourceLocked``.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.up = True
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.silent: set[socket.socket] = set()  # broker-side ends whose worker is gone
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self.up = False
        for near, far in self.pairs:
            self.silent.add(far)
            end(near)
        self.pairs.clear()

    def heal(self) -> None:
        self.up = True

    def close(self) -> None:
        for sock in [self.listener, *self.silent, *(s for pair in self.pairs for s in pair)]:
            end(sock)

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                end(near)
                continue
            far = socket.create_connection(self.upstream)
            self.pairs.append((near, far))
            threading.Thread(target=self._pump, args=(near, far), daemon=True).start()
            threading.Thread(target=self._pump, args=(far, near), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            if source not in self.silent and target not in self.silent:
                with suppress(OSError):
                    target.sendall(data)
        if source in self.silent:  # the broker gave up on the silent worker at last
            self.silent.discard(source)
            end(source)
        elif target not in self.silent:
            end(target)


def end(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture
def link() -> Iterator[Link]:
    parts = urlsplit(BROKER_URL)
    proxy = Link((parts.hostname or "127.0.0.1", parts.port or 5672))
    yield proxy
    proxy.close()


def supervise(supervisor: Supervisor, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        supervisor.check()


@pytest.mark.skipif(ON_REDIS, reason="RabbitMQ only: tests/test_rabbitmq.py runs this file on a vhost of its own")
def test_a_worker_consumes_again_within_a_minute_of_the_end_of_a_30_s_cut_to_rabbitmq(
    client: httpx.Client, link: Link, tmp_path: Path
) -> None:
    parts = urlsplit(BROKER_URL)
    through_link = BROKER_URL.replace(parts.netloc, f"{parts.username}:{parts.password}@127.0.0.1:{link.port}")
    env = dict(os.environ, ROADIE_BROKER_URL=through_link)
    worker = ProcessGroup("worker-default", POOLS["default"].command(), tmp_path / "worker.log", env, ROOT).start()
    supervisor = Supervisor({"worker-default": worker})  # as under `roadie up`, should the worker still exit
    stop = threading.Event()
    watcher = threading.Thread(target=supervise, args=(supervisor, stop), daemon=True)
    watcher.start()
    try:
        wait_for_job(client, submit(client, {"n": "before"})["id"], "succeeded", timeout=90)

        link.cut()
        during = submit(client, {"n": "during"})["id"]  # RabbitMQ hands it to the consumer it cannot reach
        time.sleep(CUT_S)
        link.heal()
        healed_at = time.monotonic()

        wait_for_job(client, during, "succeeded", timeout=60)
        wait_for_job(client, submit(client, {"n": "after"})["id"], "succeeded", timeout=60)
        assert time.monotonic() - healed_at < 60, worker.log_tail()
        assert watcher.is_alive(), "the supervisor gave up on the worker"
    finally:
        stop.set()
        watcher.join()
        worker.stop()
