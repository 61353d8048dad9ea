"""``make demo``: the platform end to end on one machine, in under a minute."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx

from roadie.auth import create_client
from roadie.db import async_engine, async_transaction
from roadie.supervisor import running_platform


async def _demo_key() -> str:
    try:
        async with async_transaction() as session:
            _, raw_key = await create_client(session, f"demo-{uuid.uuid4().hex[:8]}", ["jobs:write", "jobs:read"])
            return raw_key
    finally:
        await async_engine().dispose()


def run_demo() -> int:
    """Start everything, submit a sample job over HTTP, print its result; 0 when it succeeded."""
    with running_platform() as platform:
        key = asyncio.run(_demo_key())
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": f"demo-{uuid.uuid4()}"}
        body = {"type": "platform.echo", "payload": {"hello": "from make demo", "sleep_ms": 250}}
        with httpx.Client(base_url=platform.base_url, headers=headers, timeout=10) as client:
            accepted = client.post("/v1/jobs", json=body)
            accepted.raise_for_status()
            job = accepted.json()
            print(f"POST /v1/jobs -> {accepted.status_code}: job {job['id']} {job['status']}")
            deadline = time.monotonic() + 60
            while job["status"] not in {"succeeded", "failed", "cancelled"} and time.monotonic() < deadline:
                time.sleep(0.2)
                job = client.get(f"/v1/jobs/{job['id']}").json()
        print(f"job {job['id']} {job['status']} after {job['attempts']} attempt(s)")
        print("result:", json.dumps(job["result"]))
        print(f"\nLook at it: GET {job['url']} with a key from `.venv/bin/roadie keys create`")
        print(f"Logs of every process: {platform.settings.home.resolve() / 'logs'}")
        print("Keep the platform running with `.venv/bin/roadie up`.")
        return 0 if job["status"] == "succeeded" else 1
