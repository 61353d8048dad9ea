"""A closed-loop HTTP load generator, run as its own process: ``python -m bench.loadgen --url ...``.

``--concurrency`` tasks each keep one keep-alive connection and send the same POST back to back.
Requests completing in the first ``--warmup`` seconds are not measured; then every request
completing with the ``--expect``-ed status within the next ``--seconds`` is. Prints one JSON object
on stdout: the measured latencies, every response status seen (warm-up and tail included),
connection errors, a sample unexpected response and the generator's own CPU time.

The default ``raw`` client speaks just enough HTTP/1.1 (Content-Length bodies) to cost far less
CPU per request than httpx, so on a small machine the load generator is not what is measured;
``--client httpx`` uses ``httpx.AsyncClient`` instead, as a cross-check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Run:
    warm_until: float
    end_at: float
    expect: int
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    sample_rejection: str | None = None

    def record(self, started: float, status: int, body: bytes) -> None:
        """Count the response; measure it if it is the expected status and inside the window."""
        done = time.perf_counter()
        self.statuses[status] += 1
        if status != self.expect:
            self.sample_rejection = self.sample_rejection or f"{status} {body[:300]!r}"
        elif self.warm_until <= done <= self.end_at:
            self.latencies.append(done - started)


def build_request(url: str, headers: list[tuple[str, str]], body: bytes) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """The status, the body and whether the server keeps the connection open."""
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    length, keep_alive = 0, True
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            raise ValueError("chunked responses are not supported by the raw client")
        elif name == b"connection" and value.strip().lower() == b"close":
            keep_alive = False
    return status, await reader.readexactly(length), keep_alive


async def raw_client(run: Run, host: str, port: int, request: bytes) -> None:
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    try:
        while time.perf_counter() < run.end_at:
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(host, port)
                started = time.perf_counter()
                writer.write(request)
                status, body, keep_alive = await read_response(reader)
                run.record(started, status, body)
                if not keep_alive:
                    writer.close()
                    writer = reader = None
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                run.errors[type(exc).__name__] += 1
                if writer is not None:
                    writer.close()
                writer = reader = None
                await asyncio.sleep(0.01)
    finally:
        if writer is not None:
            writer.close()


async def httpx_client(run: Run, url: str, headers: list[tuple[str, str]], body: bytes) -> None:
    import httpx

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(headers=[*headers, ("Content-Type", "application/json")], limits=limits) as client:
        while time.perf_counter() < run.end_at:
            started = time.perf_counter()
            try:
                response = await client.post(url, content=body, timeout=30)
            except httpx.HTTPError as exc:
                run.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.01)
                continue
            run.record(started, response.status_code, response.content)


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    headers = [(name.strip(), value.strip()) for name, _, value in (h.partition(":") for h in args.header)]
    body = args.body.encode()
    start = time.perf_counter()
    run = Run(warm_until=start + args.warmup, end_at=start + args.warmup + args.seconds, expect=args.expect)
    cpu_start = time.process_time()
    if args.client == "raw":
        host, port, request = build_request(args.url, headers, body)
        clients = [raw_client(run, host, port, request) for _ in range(args.concurrency)]
    else:
        clients = [httpx_client(run, args.url, headers, body) for _ in range(args.concurrency)]
    await asyncio.gather(*clients)
    elapsed = time.perf_counter() - start
    return {
        "client": args.client,
        "concurrency": args.concurrency,
        "window_s": args.seconds,
        "latencies_s": run.latencies,
        "statuses": {str(k): v for k, v in sorted(run.statuses.items())},
        "errors": dict(run.errors),
        "sample_rejection": run.sample_rejection,
        "cpu_percent": 100 * (time.process_time() - cpu_start) / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--body", default="{}")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument("--expect", type=int, default=202, help="the status that counts as a success")
    result = asyncio.run(main_async(parser.parse_args()))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
