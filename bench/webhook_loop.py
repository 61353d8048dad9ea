"""The webhooks benchmark's baseline: a bare httpx loop, run as its own process.

    python -m bench.webhook_loop --url URL --bodies FILE [--threads 8] [--warmup 50]

``FILE`` holds a JSON list of ``[webhook_id, body]``; the secret comes from
``ROADIE_BENCH_WEBHOOK_SECRET``. ``--threads`` threads (the webhooks pool's concurrency), each with
one keep-alive ``httpx.Client``, take the bodies in turn, sign each at the moment they post it (the
same ``signature_header`` the deliveries use) and POST it. The first ``--warmup`` bodies are posted
before the clock starts. Prints one JSON object: the wall-clock start of the measured part, its CPU
time, every status seen and the measured POST latencies.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx

from roadie.webhooks.signing import signature_header

SECRET = os.environ["ROADIE_BENCH_WEBHOOK_SECRET"]


def post_all(url: str, bodies: list[tuple[str, str]], threads: int) -> tuple[Counter[str], list[float]]:
    """Post every body once, ``threads`` at a time; the statuses (or error names) and the latencies."""
    work: Iterator[tuple[str, str]] = iter(bodies)
    lock = threading.Lock()
    statuses: Counter[str] = Counter()
    latencies: list[float] = []

    def run() -> None:
        with httpx.Client(timeout=10, follow_redirects=False, trust_env=False) as client:
            while True:
                with lock:
                    item = next(work, None)
                if item is None:
                    return
                webhook_id, body = item
                now = dt.datetime.now(dt.UTC)
                headers = {
                    "content-type": "application/json",
                    "webhook-id": webhook_id,
                    "webhook-timestamp": str(int(now.timestamp())),
                    "webhook-signature": signature_header([SECRET], webhook_id, now, body),
                }
                started = time.perf_counter()
                try:
                    outcome = str(client.post(url, content=body, headers=headers).status_code)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                with lock:
                    statuses[outcome] += 1
                    latencies.append(time.perf_counter() - started)

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return statuses, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=50, help="bodies posted before the clock starts")
    args = parser.parse_args()
    bodies = [(webhook_id, body) for webhook_id, body in json.loads(args.bodies.read_text())]
    post_all(args.url, bodies[: args.warmup], args.threads)
    cpu_start, started_at = time.process_time(), time.time()
    statuses, latencies = post_all(args.url, bodies[args.warmup :], args.threads)
    result = {
        "started_at": started_at,
        "cpu_s": time.process_time() - cpu_start,
        "statuses": dict(statuses),
        "latencies_s": latencies,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
