"""``make demo``: the platform end to end on one machine, in under a minute."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from roadie.auth import create_client
from roadie.db import async_engine, async_transaction
from roadie.supervisor import running_platform


async def _demo_key() -> str:
    try:
        async with async_transaction() as session:
            _, raw_key = await create_client(
                session, f"demo-{uuid.uuid4().hex[:8]}", ["jobs:write", "jobs:read", "tracks:write"]
            )
            return raw_key
    finally:
        await async_engine().dispose()


#: A valid Solana address for the demo's artist (the system program's; nothing is minted to it).
DEMO_WALLET = "11111111111111111111111111111111"


def _wait(client: httpx.Client, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while job["status"] not in {"succeeded", "failed", "cancelled"} and time.monotonic() < deadline:
        time.sleep(0.5)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    return job


def _ingest_sample_track(client: httpx.Client) -> dict[str, Any]:
    """Upload 20 s of a generated A minor chord with a cover, and follow its track.ingest job."""
    from roadie.media import ffmpeg

    with tempfile.TemporaryDirectory(prefix="roadie-demo-") as folder:
        audio, cover = Path(folder) / "demo.flac", Path(folder) / "cover.png"
        tones = [
            arg for hz in (220, 261.63, 329.63) for arg in ("-f", "lavfi", "-i", f"sine=frequency={hz}:duration=20")
        ]
        make = [ffmpeg.tools().ffmpeg, "-hide_banner", "-loglevel", "error", "-y"]
        subprocess.run([*make, *tones, "-filter_complex", "amix=inputs=3", "-ac", "2", str(audio)], check=True)
        subprocess.run(
            [*make, "-f", "lavfi", "-i", "color=c=purple:s=256x256", "-frames:v", "1", str(cover)], check=True
        )
        metadata = {"title": "Demo Chord", "artist_wallet": DEMO_WALLET, "genre": "Ambient"}
        accepted = client.post(
            "/v1/tracks",
            headers={"Idempotency-Key": f"demo-track-{uuid.uuid4()}"},
            files={
                "metadata": (None, json.dumps(metadata), "application/json"),
                "audio": ("demo.flac", audio.read_bytes(), "audio/flac"),
                "cover": ("cover.png", cover.read_bytes(), "image/png"),
            },
        )
    accepted.raise_for_status()
    job = accepted.json()
    print(f"POST /v1/tracks -> {accepted.status_code}: track {job['track_id']}, job {job['id']} {job['status']}")
    job = _wait(client, job, 240)
    for stage in (job.get("result") or {}).get("stages", []):
        print(f"  {stage['name']:<13} {stage['status']:<10} {stage.get('reason') or ''}")
    return job


def run_demo() -> int:
    """Start everything, submit a sample job and upload a sample track over HTTP; 0 when both succeeded."""
    with running_platform() as platform:
        key = asyncio.run(_demo_key())
        headers = {"Authorization": f"Bearer {key}"}
        body = {"type": "platform.echo", "payload": {"hello": "from make demo", "sleep_ms": 250}}
        with httpx.Client(base_url=platform.base_url, headers=headers, timeout=10) as client:
            accepted = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": f"demo-{uuid.uuid4()}"})
            accepted.raise_for_status()
            job = accepted.json()
            print(f"POST /v1/jobs -> {accepted.status_code}: job {job['id']} {job['status']}")
            deadline = time.monotonic() + 60
            while job["status"] not in {"succeeded", "failed", "cancelled"} and time.monotonic() < deadline:
                time.sleep(0.2)
                job = client.get(f"/v1/jobs/{job['id']}").json()
            print(f"job {job['id']} {job['status']} after {job['attempts']} attempt(s)")
            print("result:", json.dumps(job["result"]))
            track_job = _ingest_sample_track(client)
        print(f"track.ingest {track_job['id']} {track_job['status']}", track_job.get("error") or "")
        print(f"\nLook at it: GET {job['url']} with a key from `.venv/bin/roadie keys create`")
        print(f"Logs of every process: {platform.settings.home.resolve() / 'logs'}")
        print("Keep the platform running with `.venv/bin/roadie up`.")
        return 0 if job["status"] == track_job["status"] == "succeeded" else 1
