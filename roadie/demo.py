"""``make demo``: the platform end to end on one machine, in under a minute."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from roadie.auth import create_client
from roadie.db import async_engine, async_transaction
from roadie.flower import authentication_configured
from roadie.ingest.pipeline import STAGES
from roadie.settings import get_settings
from roadie.supervisor import running_platform

#: What the demo's own receiver subscribes to: its upload's outcome, its track, its NFT.
DEMO_EVENTS = ("job.succeeded", "job.failed", "track.ready", "track.failed", "nft.minted")


async def _demo_key() -> str:
    try:
        async with async_transaction() as session:
            _, raw_key = await create_client(
                session, f"demo-{uuid.uuid4().hex[:8]}", ["jobs:write", "jobs:read", "tracks:write", "webhooks:write"]
            )
            return raw_key
    finally:
        await async_engine().dispose()


class Display:
    """The demo's account of its long steps: a live ``rich`` display on a terminal, plain lines otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not self.live,
        )
        self.stages: dict[str, TaskID] = {}
        self.said: dict[str, str] = {}

    def __enter__(self) -> Display:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """One step of unknown length: a spinner, then its time."""
        started = time.monotonic()
        task = self.progress.add_task(what, total=None)
        if not self.live:
            self.console.print(f"{what} ...")
        yield
        took = f"{what}: done in {time.monotonic() - started:.1f} s"
        self.progress.update(task, description=took, total=1, completed=1)
        if not self.live:
            self.console.print(took)

    def stage(self, name: str, status: str, percent: int) -> None:
        """A pipeline stage's bar; in plain text, a line each time its status changes."""
        if name not in self.stages:
            self.stages[name] = self.progress.add_task(name, total=100)
        self.progress.update(self.stages[name], description=f"  {name:<13} {status}", completed=percent)
        if not self.live and self.said.get(name) != status:
            self.said[name] = status
            self.console.print(f"  {name:<13} {status}")


def _follow(client: httpx.Client, job: dict[str, Any], display: Display, timeout_s: float) -> dict[str, Any]:
    """Poll the job until it ends, showing each of its stages (its child jobs) as it runs."""
    stage_names = {stage.job_type: stage.name for stage in STAGES}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job['id']}").json()
        for child in job.get("children", []):
            percent = 100 if child["status"] == "succeeded" else child["progress"]
            display.stage(stage_names.get(child["type"], child["type"]), child["status"], percent)
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            break
        time.sleep(0.5)
    return job


def _ingest_sample_track(client: httpx.Client, display: Display) -> dict[str, Any]:
    """Upload 20 s of a generated chord with a cover, minting requested; follow its track.ingest job."""
    from solders.keypair import Keypair

    from roadie.media import ffmpeg

    with tempfile.TemporaryDirectory(prefix="roadie-demo-") as folder:
        audio, cover = Path(folder) / "demo.flac", Path(folder) / "cover.png"
        # A chord of its own each run: the same audio again would be held as a duplicate upload.
        root = random.uniform(180, 360)
        tones = [
            arg
            for hz in (root, root * random.uniform(1.15, 1.3), root * random.uniform(1.4, 1.6))
            for arg in ("-f", "lavfi", "-i", f"sine=frequency={hz:.2f}:duration=20")
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
    display.console.print(
        f"POST /v1/tracks -> {accepted.status_code}: track {job['track_id']}, job {job['id']} {job['status']}"
    )
    job = _follow(client, job, display, 240)
    duplicate = (job.get("result") or {}).get("duplicate_of")
    if duplicate:  # a demo run before this one on the same ROADIE_HOME uploaded a chord that sounds the same
        display.console.print(
            f"  same audio as track {duplicate['track_id']} (similarity {duplicate['similarity']}): "
            f"policy {duplicate['policy']}"
            + (", held for an admin: not pinned, not minted" if job["result"].get("held") else "")
        )
    for stage in (job.get("result") or {}).get("stages", []):
        error = stage.get("error") or {}
        if error:
            display.console.print(f"  {stage['name']} failed: {error.get('code')}: {error.get('message')}")
        if stage["name"] == "pin_metadata" and stage["status"] == "succeeded":
            display.console.print(f"  metadata {stage['result']['uri']}")
        if stage["name"] == "mint" and stage["status"] == "succeeded":
            display.console.print(f"  NFT mint {stage['result']['mint']} owned by {stage['result']['owner']}")
    return job


class DemoReceiver:
    """A webhook receiver on 127.0.0.1 (uvicorn in a thread) that keeps the events whose signature verifies."""

    def __init__(self) -> None:
        self.secret = ""
        self.events: list[dict[str, Any]] = []
        app = Starlette(routes=[Route("/webhooks", self._receive, methods=["POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="demo-receiver", daemon=True)

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        try:
            event = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            return Response("bad signature", 400)
        self.events.append(event)
        return Response(status_code=204)

    @property
    def url(self) -> str:
        (listener,) = self.server.servers[0].sockets
        return f"http://127.0.0.1:{listener.getsockname()[1]}/webhooks"

    def __enter__(self) -> DemoReceiver:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)

    def wait_for(self, types: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not types <= {event["type"] for event in self.events} and time.monotonic() < deadline:
            time.sleep(0.1)


def run_demo() -> int:
    """Start everything and run the platform's main job over HTTP: ingest a track and mint its NFT, and be
    told of it by signed webhooks."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the demo prints its own account of each request
    os.environ.setdefault("ROADIE_WEBHOOK_ALLOWED_HOSTS", '["127.0.0.1"]')  # the demo's receiver is local
    get_settings.cache_clear()
    console = Console(highlight=False, soft_wrap=True)
    with Display(console) as display, running_platform(step=display.step) as platform, DemoReceiver() as receiver:
        key = asyncio.run(_demo_key())
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=platform.base_url, headers=headers, timeout=30) as client:
            endpoint = client.post("/v1/webhooks", json={"url": receiver.url, "events": list(DEMO_EVENTS)})
            endpoint.raise_for_status()
            receiver.secret = endpoint.json()["secret"]
            display.console.print(
                f"POST /v1/webhooks -> {endpoint.status_code}: {receiver.url} hears {', '.join(DEMO_EVENTS)}"
            )
            job = _ingest_sample_track(client, display)
        display.console.print(f"track.ingest {job['id']} {job['status']}", job.get("error") or "")
        receiver.wait_for(set(DEMO_EVENTS), timeout_s=15)
        for event in receiver.events:
            subject = next(iter(event["data"].values()))
            display.console.print(f"webhook {event['type']} {event['id']} (signature verified): {subject.get('id')}")
        display.console.print(f"Logs of every process: {platform.settings.home.resolve() / 'logs'}")
        display.console.print("Stopping every process ...")
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
