"""A killed media worker leaves nothing behind: no ffmpeg running on, no scratch folder kept.

Real workers, real ffmpeg, real beat: a pool child is SIGKILLed mid-transcode, and scratch folders
of dead owners are swept while one whose owner lives is kept.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from roadie import blobs
from roadie.processes import ProcessGroup, beat_command
from tests.conftest import ROOT, Processes
from tests.fixtures.media import AudioFiles, post_track
from tests.test_durability import wait_until

pytestmark = pytest.mark.usefixtures("api_url")

#: A process that makes a transcode's scratch folder, says where, and holds it until it is killed.
HOLD_SCRATCH = """
import sys, time
from roadie import blobs
with blobs.work_dir("transcode-") as path:
    print(path, flush=True)
    time.sleep(600)
"""


@pytest.fixture
def scratch_owner() -> Iterator[Callable[[], tuple[Path, subprocess.Popen[str]]]]:
    """Starts processes that each own a scratch folder; they are killed after the test."""
    owners: list[subprocess.Popen[str]] = []

    def start() -> tuple[Path, subprocess.Popen[str]]:
        owner = subprocess.Popen([sys.executable, "-c", HOLD_SCRATCH], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        owners.append(owner)
        assert owner.stdout is not None
        return Path(owner.stdout.readline().strip()), owner

    yield start
    for owner in owners:
        owner.kill()
        owner.wait()


def dead_owners_scratch(scratch_owner: Callable[[], tuple[Path, subprocess.Popen[str]]]) -> Path:
    path, owner = scratch_owner()
    owner.kill()  # SIGKILL: no clean-up of its own
    owner.wait()
    assert path.is_dir()
    return path


def scratch(blob_dir: Path) -> list[Path]:
    tmp = blob_dir / blobs.TMP_DIR
    return list(tmp.iterdir()) if tmp.exists() else []


def ffmpeg_under(process: psutil.Process) -> list[psutil.Process]:
    with_name = []
    for child in process.children(recursive=True):
        try:
            if child.name() == "ffmpeg":
                with_name.append(child)
        except psutil.NoSuchProcess:
            pass
    return with_name


def ended(process: psutil.Process) -> bool:
    """Gone, or a zombie nobody reaped yet: either way it runs no more."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def transcode_of(client: httpx.Client, ingest_id: str) -> dict[str, Any] | None:
    children = client.get(f"/v1/jobs/{ingest_id}").json().get("children", [])
    return next((child for child in children if child["type"] == "media.transcode"), None)


def test_a_media_child_killed_mid_transcode_leaves_no_ffmpeg_and_no_scratch_once_the_retry_succeeds(
    make_client: Callable[..., httpx.Client], own_workers: Processes, audio: AudioFiles, blob_dir: Path
) -> None:
    uploader = make_client("tracks:write", "jobs:read")
    worker = psutil.Process(own_workers.worker(queues="default,media", concurrency=1).pid)
    response = post_track(uploader, audio.song("song-45s.flac", 45))
    assert response.status_code == 202, response.text
    running: list[psutil.Process] = []

    def encoding() -> bool:  # the renditions' and the loudness measurement's ffmpeg, side by side
        running[:] = ffmpeg_under(worker)
        return len(running) >= 2 and bool(scratch(blob_dir))

    wait_until(encoding, timeout=120)
    (child,) = {process.ppid() for process in running}  # the pool child running the transcode
    killed_scratch = scratch(blob_dir)

    os.kill(child, signal.SIGKILL)

    wait_until(lambda: all(ended(process) for process in running), timeout=10)
    ingest_id = response.json()["id"]
    wait_until(lambda: (transcode_of(uploader, ingest_id) or {}).get("status") == "succeeded", timeout=300)
    transcode = uploader.get(f"/v1/jobs/{(transcode_of(uploader, ingest_id) or {})['id']}").json()
    assert transcode["attempts"] == 2  # the killed one and its retry
    assert all(not path.exists() for path in killed_scratch)
    assert scratch(blob_dir) == []


def test_scratch_of_dead_owners_is_swept_at_media_worker_start_and_from_beat_and_scratch_in_use_is_kept(
    own_workers: Processes,
    scratch_owner: Callable[[], tuple[Path, subprocess.Popen[str]]],
    blob_dir: Path,
    tmp_path: Path,
) -> None:
    before_start = dead_owners_scratch(scratch_owner)
    own_workers.worker(queues="media", concurrency=1)
    wait_until(lambda: not before_start.exists(), timeout=60)  # swept as the pool process started

    in_use, _ = scratch_owner()
    after_start = dead_owners_scratch(scratch_owner)
    command = beat_command(tmp_path / "celerybeat-schedule")
    env = {**os.environ, "ROADIE_SCHEDULE_SWEEP_SCRATCH": "every 1s"}
    beat = ProcessGroup("beat", command, tmp_path / "beat.log", env=env, cwd=ROOT).start()
    try:
        wait_until(lambda: not after_start.exists(), timeout=60)
    finally:
        beat.stop()

    assert in_use.is_dir()
    assert scratch(blob_dir) == [in_use]
