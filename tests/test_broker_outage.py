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

from roadie.processes import ProcessGroup
from roadie.supervisor import Supervisor, worker_command
from tests.conftest import BROKER_URL, ON_REDIS, ROOT
from tests.helpers import submit, wait_for_job

CUT_S = 30


class Link:
    """A TCP proxy to ``upstream`` that can be cut and healed.

    Cut, nothing crosses it: what either end sends, or a close, waits in the proxy as TCP segments wait
    to be retransmitted, and new connections get no answer. Healed, everything held is delivered, so
    an end that gave up during the cut is closed and the other learns it then.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self.up.clear()

    def heal(self) -> None:
        self.up.set()

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(near,), daemon=True).start()

    def _connect(self, near: socket.socket) -> None:
        self.up.wait()  # a connection attempted during the cut gets no answer before the heal
        far = socket.create_connection(self.upstream)
        self.sockets += [near, far]
        threading.Thread(target=self._pump, args=(near, far), daemon=True).start()
        threading.Thread(target=self._pump, args=(far, near), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            self.up.wait()
            if not data:
                break
            try:
                target.sendall(data)
            except OSError:
                break
        for end in (target, source):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()


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
    worker = ProcessGroup("worker-default", worker_command("default", 1), tmp_path / "worker.log", env, ROOT).start()
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
