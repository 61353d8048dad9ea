"""The whole ingest over HTTP with real workers: upload, one parent job, a child job per stage, a ready track."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from solders.pubkey import Pubkey
from sqlalchemy import select

from models.music import Nft, Track, TrackFile
from models.platform import JobAttempt
from roadie import blobs
from roadie.chain.client import connect
from roadie.chain.nft import MintedNft, read_mint
from roadie.db import transaction
from roadie.ipfs.client import IpfsNode
from roadie.processes import POOLS, ProcessGroup
from tests.conftest import ROOT, create_key
from tests.fixtures.media import BAD_SOURCES, AudioFiles, new_wallet, post_track
from tests.fixtures.webhooks import Receiver, register_endpoint
from tests.helpers import wait_for_job
from tests.test_admin_console import console, csrf_token, sign_in

pytestmark = pytest.mark.usefixtures("worker", "ipfs_node")
RENDITIONS = {"mp3_320", "mp3_128", "opus_96", "preview"}


@pytest.fixture
def uploader(make_client: Callable[..., httpx.Client]) -> httpx.Client:
    return make_client("tracks:write", "jobs:read")


def ingest(client: httpx.Client, audio: Path, **fields: Any) -> dict[str, Any]:
    response = post_track(client, audio, **fields)
    assert response.status_code == 202, response.text
    return wait_for_job(client, response.json()["id"], {"succeeded", "failed"}, timeout=300)


def _track(track_id: str) -> tuple[Track, dict[str, TrackFile]]:
    with transaction() as session:
        track = session.get(Track, uuid.UUID(track_id))
        assert track is not None
        files = {f.kind: f for f in session.scalars(select(TrackFile).where(TrackFile.track_id == track.id))}
        return track, files


def _nft(track_id: uuid.UUID) -> Nft:
    with transaction() as session:
        nft = session.scalar(select(Nft).where(Nft.track_id == track_id))
        assert nft is not None
        return nft


async def _read_mint(mint_address: str) -> MintedNft | None:
    async with connect() as chain:
        return await read_mint(chain, Pubkey.from_string(mint_address))


def _stages(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {stage["name"]: stage for stage in job["result"]["stages"]}


def test_an_uploaded_track_ends_ready_with_renditions_analysis_pinned_metadata_and_its_nft_minted(
    uploader: httpx.Client, audio: AudioFiles, ipfs_node: IpfsNode, chain_running: Any, receiver: Receiver
) -> None:
    register_endpoint(uploader, receiver, ["track.ready", "nft.minted"])
    job = ingest(uploader, audio.song("ingest-120.flac", 30, bpm=120, key="C major"), cover=audio.png(), mint=True)

    assert job["status"] == "succeeded", job
    assert job["progress"]["percent"] == 100
    stages = _stages(job)
    for name in ("transcode", "cover", "analysis", "pin_track", "pin_metadata", "mint"):
        assert stages[name]["status"] == "succeeded", stages[name]
    children = {child["type"]: child for child in job["children"]}
    assert children["media.transcode"]["status"] == children["media.analyse"]["status"] == "succeeded"
    analysis = uploader.get(f"/v1/jobs/{children['media.analyse']['id']}").json()["result"]
    assert analysis["bpm"] == pytest.approx(120, abs=1)
    assert len(analysis["waveform"]) == 1000

    track, files = _track(job["result"]["track_id"])
    assert track.status == "ready"
    assert track.bpm is not None
    assert float(track.bpm) == pytest.approx(120, abs=1)
    assert track.musical_key == "C major"
    assert track.duration_ms == pytest.approx(30_000, abs=50)
    assert (track.sample_rate, track.channels) == (44100, 2)
    assert track.loudness_lufs is not None
    assert track.true_peak_dbtp is not None
    assert track.gain_db is not None
    assert float(track.loudness_lufs) + float(track.gain_db) <= -14 + 1e-6
    assert track.rms_dbfs is not None
    assert track.waveform is not None
    assert len(track.waveform["peaks"]) == 1000
    assert set(files) >= RENDITIONS
    for kind in RENDITIONS:
        stored = blobs.blob_path(str(files[kind].storage_key))
        assert stored.stat().st_size == files[kind].size_bytes
        assert files[kind].mime_type in ("audio/mpeg", "audio/ogg")
    for kind in (*RENDITIONS, "cover_3000", "cover_1000", "cover_300", "metadata"):
        assert files[kind].pin_state == "pinned", kind
        assert ipfs_node.is_pinned(str(files[kind].cid))
    assert files["source"].pin_state == files["cover"].pin_state == "unpinned"  # as uploaded: not published
    metadata = json.loads(ipfs_node.cat(str(files["metadata"].cid)))
    assert stages["pin_metadata"]["result"]["cid"] == files["metadata"].cid
    assert metadata["properties"]["category"] == "audio"
    assert metadata["animation_url"].startswith(f"ipfs://{files['mp3_320'].cid}")
    assert metadata["image"] == f"ipfs://{files['cover_1000'].cid}"
    traits = {a["trait_type"]: a["value"] for a in metadata["attributes"]}
    assert "C major" in traits.values()
    nft = _nft(track.id)
    assert (nft.status, nft.metadata_uri) == ("finalized", f"ipfs://{files['metadata'].cid}")
    minted = asyncio.run(_read_mint(str(nft.mint_address)))
    assert minted is not None
    assert minted.metadata is not None
    assert (minted.supply, minted.mint_authority) == (1, None)
    assert minted.metadata.uri == f"ipfs://{files['metadata'].cid}"
    assert minted.metadata.additional["track_id"] == str(track.id)
    # The upload's client is told, signed: the track is ready, and its NFT finalized on chain.
    (ready,) = receiver.wait_for("track.ready")
    (nft_minted,) = receiver.wait_for("nft.minted")
    assert (ready.data["track"]["id"], ready.data["track"]["job_id"]) == (str(track.id), job["id"])
    assert nft_minted.data["nft"]["mint_address"] == str(nft.mint_address)
    assert nft_minted.data["nft"]["signature"] == nft.signature


def test_the_parent_hands_its_worker_back_between_stages(uploader: httpx.Client, audio: AudioFiles) -> None:
    job = ingest(uploader, audio.song("ingest.wav", 12))

    with transaction() as session:
        outcomes = list(
            session.scalars(
                select(JobAttempt.outcome).where(JobAttempt.job_id == uuid.UUID(job["id"])).order_by(JobAttempt.number)
            )
        )
    # One short run per step; each but the last ended by waiting for the stages it had started.
    assert len(outcomes) >= 3
    assert outcomes[-1] == "succeeded"
    assert set(outcomes[:-1]) == {"waiting"}


@pytest.mark.parametrize(("make", "code"), BAD_SOURCES)
def test_bad_audio_fails_the_ingest_at_its_stage_and_leaves_no_renditions(
    uploader: httpx.Client, audio: AudioFiles, blob_dir: Path, make: Callable[[AudioFiles], Path], code: str
) -> None:
    job = ingest(uploader, make(audio))

    assert job["status"] == "failed"
    assert job["error"]["code"] == code
    assert job["error"]["message"].startswith("transcode failed: ")
    stages = _stages(job)
    assert stages["transcode"]["status"] == "failed"
    assert stages["transcode"]["error"]["code"] == code
    assert stages["analysis"]["status"] == "pending"
    track, files = _track(job["result"]["track_id"])
    assert track.status == "failed"
    assert set(files) == {"source"}  # no half-made renditions, nothing to pin
    assert files["source"].cid is None
    assert list((blob_dir / blobs.TMP_DIR).iterdir()) == []


def test_the_worker_keeps_serving_after_bad_input(uploader: httpx.Client, audio: AudioFiles) -> None:
    bad = post_track(uploader, audio.corrupt_flac()).json()["id"]
    good = post_track(uploader, audio.song("ingest.wav", 12)).json()["id"]

    assert wait_for_job(uploader, bad, {"succeeded", "failed"}, timeout=300)["status"] == "failed"
    assert wait_for_job(uploader, good, {"succeeded", "failed"}, timeout=300)["status"] == "succeeded"


def test_an_admin_rerun_resumes_at_the_failed_stage(
    uploader: httpx.Client, admin: httpx.Client, audio: AudioFiles
) -> None:
    failed = ingest(uploader, audio.corrupt_flac())
    assert failed["status"] == "failed"
    _, files = _track(failed["result"]["track_id"])
    # The operator fixes the stored source (say, from the artist's backup) and re-runs the ingest.
    blobs.blob_path(str(files["source"].storage_key)).write_bytes(audio.song("clean.flac").read_bytes())

    assert admin.post(f"/v1/admin/jobs/{failed['id']}/retry").status_code == 202
    job = wait_for_job(uploader, failed["id"], {"succeeded", "failed"}, timeout=300)

    assert job["status"] == "succeeded", job
    assert job["reruns"][0]["previous_status"] == "failed"
    transcodes = [child for child in job["children"] if child["type"] == "media.transcode"]
    assert [child["status"] for child in transcodes] == ["failed", "succeeded"]
    assert _stages(job)["transcode"]["job_id"] == transcodes[1]["id"]
    assert _track(job["result"]["track_id"])[0].status == "ready"


def test_a_media_worker_refuses_to_start_without_ffmpeg(tmp_path: Path) -> None:
    command = POOLS["media"].command(node="no-ffmpeg@%h")
    env = {**os.environ, "ROADIE_FFMPEG_PATH": "/nonexistent/ffmpeg"}
    worker = ProcessGroup("no-ffmpeg", command, tmp_path / "worker.log", env=env, cwd=ROOT).start()
    try:
        deadline = time.monotonic() + 60
        while worker.alive and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not worker.alive
        assert worker.returncode != 0
        assert "ffmpeg not found" in worker.log()
        assert "ROADIE_FFMPEG_PATH" in worker.log()
    finally:
        worker.stop()


def test_the_same_recording_uploaded_again_is_held_for_an_admin_who_releases_it_in_the_console(
    uploader: httpx.Client, api_url: str, audio: AudioFiles, ipfs_node: IpfsNode
) -> None:
    song, wallet, key = audio.song("original.flac", 20, bpm=128, key="A minor"), new_wallet(), "original-upload"
    first = post_track(uploader, song, artist_wallet=wallet, headers={"Idempotency-Key": key})
    original = wait_for_job(uploader, first.json()["id"], {"succeeded", "failed"}, timeout=300)
    assert original["status"] == "succeeded", original
    assert "duplicate_of" not in original["result"]
    # The same artist sending the same upload with the same key: a replay, not a second track.
    replay = post_track(uploader, song, artist_wallet=wallet, headers={"Idempotency-Key": key})
    assert (replay.headers["Idempotent-Replayed"], replay.json()["id"]) == ("true", original["id"])
    copy = song.with_name("copy-128k.mp3")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(song), "-b:a", "128k", str(copy)], check=True)

    held = ingest(uploader, copy)  # re-encoded, by someone else

    assert held["status"] == "succeeded", held
    assert held["result"]["held"] is True
    duplicate = held["result"]["duplicate_of"]
    assert (duplicate["track_id"], duplicate["policy"]) == (original["result"]["track_id"], "hold")
    assert duplicate["similarity"] >= 0.9
    assert _stages(held)["pin_track"]["status"] == "held"
    track, files = _track(held["result"]["track_id"])
    assert track.status == "held"
    assert {f.pin_state for f in files.values()} <= {"pending", "unpinned"}  # nothing published, nothing minted

    with console(api_url) as browser:
        sign_in(browser, create_key(f"ops-{uuid.uuid4().hex[:6]}", ["admin"]))
        page = browser.get(f"/admin/jobs/{held['id']}").text
        assert f'Held: its audio repeats track <span class="mono">{duplicate["track_id"]}</span>' in page
        form = {"csrf_token": csrf_token(page), "force": "on"}
        assert browser.post(f"/admin/jobs/{held['id']}/retry", data=form).status_code == 303
    released = wait_for_job(uploader, held["id"], {"succeeded", "failed"}, timeout=300)

    assert released["status"] == "succeeded", released
    assert "held" not in released["result"]
    assert released["result"]["duplicate_of"] == duplicate  # still flagged
    track, files = _track(held["result"]["track_id"])
    assert track.status == "ready"
    assert files["metadata"].pin_state == files["mp3_320"].pin_state == "pinned"
