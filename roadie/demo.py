"""``make demo``: the platform end to end on one machine, in under a minute."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from roadie.auth import create_client
from roadie.db import async_engine, async_transaction
from roadie.flower import authentication_configured
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


def _wait(client: httpx.Client, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while job["status"] not in {"succeeded", "failed", "cancelled"} and time.monotonic() < deadline:
        time.sleep(0.5)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    return job


def _ingest_sample_track(client: httpx.Client) -> dict[str, Any]:
    """Upload 20 s of a generated A minor chord with a cover, minting requested; follow its track.ingest job."""
    from solders.keypair import Keypair

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
        artist_wallet = str(Keypair().pubkey())  # a fresh wallet: the NFT is minted to it
        metadata = {"title": "Demo Chord", "artist_wallet": artist_wallet, "genre": "Ambient", "mint": True}
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
        error = stage.get("error") or {}
        print(f"  {stage['name']:<13} {stage['status']:<10} {error.get('code') or ''}")
        if stage["name"] == "pin_metadata" and stage["status"] == "succeeded":
            print(f"  {'':13} metadata {stage['result']['uri']}")
        if stage["name"] == "mint" and stage["status"] == "succeeded":
            print(f"  {'':13} NFT mint {stage['result']['mint']} owned by {stage['result']['owner']}")
    return job


def run_demo() -> int:
    """Start everything and run the platform's main job over HTTP: ingest a track and mint its NFT."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the demo prints its own account of each request
    with running_platform() as platform:
        key = asyncio.run(_demo_key())
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=platform.base_url, headers=headers, timeout=30) as client:
            job = _ingest_sample_track(client)
        print(f"track.ingest {job['id']} {job['status']}", job.get("error") or "")
        print(f"Logs of every process: {platform.settings.home.resolve() / 'logs'}")
    settings = platform.settings
    flower = f"http://{settings.flower_address}:{settings.flower_port}" if authentication_configured(settings) else None
    print(_next_steps(platform.base_url, job["url"], key, flower))
    return 0 if job["status"] == "succeeded" else 1


def _next_steps(base_url: str, job_url: str, key: str, flower: str | None) -> str:
    """Commands that work as printed once `roadie up` runs again: the data stays in ROADIE_HOME."""
    lines = [
        "",
        "Everything stopped; the data stays. Start it again and look around:",
        "  .venv/bin/roadie up",
        f'  curl -s {job_url} -H "Authorization: Bearer {key}"   # the demo\'s key reads its job',
        "  .venv/bin/roadie keys create --name me --scopes admin     # a key for the console:",
        f"  open {base_url}/admin/ and sign in with that key",
    ]
    if flower:
        lines.append(f"  Flower at {flower}, with the ROADIE_FLOWER_* authentication you configured")
    return "\n".join(lines)
