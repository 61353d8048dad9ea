"""Audio fingerprints with real audio: the same song at three bitrates or trimmed matches, another song does not."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, text

from models.music import Track, TrackFile, TrackFingerprint
from roadie import blobs
from roadie.db import transaction
from roadie.ingest import duplicates, stages
from roadie.jobs.errors import PermanentError
from roadie.media import fingerprint
from roadie.settings import get_settings
from tests.fixtures.ipfs import MakeTrack
from tests.fixtures.media import AudioFiles

THRESHOLD = 0.8


def _reencode(source: Path, target: Path, *options: str, start_s: float = 0) -> Path:
    if not target.exists():
        command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-ss", str(start_s), "-i", str(source)]
        subprocess.run([*command, *options, "-map_metadata", "-1", str(target)], check=True)
    return target


def _fingerprint(path: Path) -> np.ndarray:
    """What the transcode's ffmpeg writes, with the same output options, alone."""
    out = path.with_suffix(".fp")
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(path)]
    subprocess.run([*command, *fingerprint.output_args(out)], check=True)
    return fingerprint.read(out)


@pytest.fixture(scope="module")
def versions(audio: AudioFiles) -> dict[str, Path]:
    """One song as uploaded (FLAC), re-encoded at three bitrates, and trimmed by 4 s; and a different song."""
    song = audio.song("fingerprint-song.flac", 40, bpm=120, key="C major")
    folder = song.parent
    return {
        "flac": song,
        "320k": _reencode(song, folder / "fp-320k.mp3", "-b:a", "320k"),
        "128k": _reencode(song, folder / "fp-128k.mp3", "-b:a", "128k"),
        "64k": _reencode(song, folder / "fp-64k.mp3", "-b:a", "64k"),
        "trimmed": _reencode(song, folder / "fp-trimmed.ogg", start_s=4),
        "other": audio.song("fingerprint-other.flac", 40, bpm=97, key="A minor"),
    }


@pytest.mark.parametrize("version", ["320k", "128k", "64k", "trimmed"])
def test_the_same_song_re_encoded_or_trimmed_matches(versions: dict[str, Path], version: str) -> None:
    found = fingerprint.compare(_fingerprint(versions["flac"]), _fingerprint(versions[version]))

    assert found.similarity >= 0.9
    expected_offset = 4.0 if version == "trimmed" else 0.0
    assert found.offset_s == pytest.approx(expected_offset, abs=fingerprint.ITEM_S)


def test_a_different_song_does_not_match(versions: dict[str, Path]) -> None:
    song, other = _fingerprint(versions["flac"]), _fingerprint(versions["other"])

    assert fingerprint.compare(song, other).similarity < THRESHOLD
    assert set(fingerprint.hashes(song)).isdisjoint(fingerprint.hashes(other))  # not even a candidate


# --- matching against earlier tracks -------------------------------------------------------------


@pytest.fixture
def fingerprinted(make_track: MakeTrack) -> Callable[[Path, str], tuple[uuid.UUID, duplicates.Verdict]]:
    def make(path: Path, policy: str) -> tuple[uuid.UUID, duplicates.Verdict]:
        track_id = make_track({})
        return track_id, duplicates.record(track_id, _fingerprint(path), policy=policy, threshold=THRESHOLD)

    return make


def test_an_upload_of_the_same_audio_names_the_earlier_track_and_the_similarity(
    versions: dict[str, Path], fingerprinted: Callable[[Path, str], tuple[uuid.UUID, duplicates.Verdict]]
) -> None:
    first, verdict = fingerprinted(versions["flac"], "hold")
    assert verdict == duplicates.Verdict(None, None, None)

    for version in ("320k", "128k", "64k"):
        _, verdict = fingerprinted(versions[version], "hold")
        assert (verdict.track_id, verdict.decision) == (first, "hold"), version
        assert verdict.similarity is not None
        assert verdict.similarity >= 0.9
    _, verdict = fingerprinted(versions["other"], "hold")
    assert verdict.decision is None


def test_rejected_and_failed_tracks_are_not_matched_against(
    versions: dict[str, Path], fingerprinted: Callable[[Path, str], tuple[uuid.UUID, duplicates.Verdict]]
) -> None:
    first, _ = fingerprinted(versions["flac"], "reject")
    _, verdict = fingerprinted(versions["128k"], "reject")
    assert (verdict.track_id, verdict.decision) == (first, "reject")
    with transaction() as session:
        session.get_one(Track, first).status = "failed"

    _, verdict = fingerprinted(versions["64k"], "reject")

    assert verdict.decision is None  # the original failed, its copy was rejected: nothing left to repeat


def test_the_verdict_is_made_once_per_track(
    versions: dict[str, Path], fingerprinted: Callable[[Path, str], tuple[uuid.UUID, duplicates.Verdict]]
) -> None:
    fingerprinted(versions["flac"], "allow")
    copy, verdict = fingerprinted(versions["128k"], "allow")

    again = duplicates.record(copy, _fingerprint(versions["128k"]), policy="reject", threshold=THRESHOLD)

    assert again == verdict
    with transaction() as session:
        assert session.scalar(select(TrackFingerprint.decision).where(TrackFingerprint.track_id == copy)) == "allow"


def test_candidates_come_from_the_gin_index_not_a_scan_of_every_fingerprint(
    versions: dict[str, Path], fingerprinted: Callable[[Path, str], tuple[uuid.UUID, duplicates.Verdict]]
) -> None:
    fingerprinted(versions["flac"], "allow")
    hashes = fingerprint.hashes(_fingerprint(versions["128k"]))

    with transaction() as session:
        session.execute(text("SET LOCAL enable_seqscan = off"))  # a handful of rows: force the planner's hand
        plan = "\n".join(
            session.scalars(
                text("EXPLAIN " + str(duplicates._CANDIDATES)),
                {"hashes": hashes, "track_id": uuid.uuid4(), "limit": duplicates.CANDIDATES},
            )
        )

    assert "ix_track_fingerprints_hashes" in plan, plan


def test_a_rejected_duplicate_fails_its_transcode_and_stores_no_rendition(
    make_track: MakeTrack, versions: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROADIE_DUPLICATE_AUDIO_POLICY", "reject")
    get_settings.cache_clear()
    first = make_track({"source": versions["flac"].read_bytes()})
    copy = make_track({"source": versions["128k"].read_bytes()})
    stages.transcode_track(first, lambda percent, stage: None)

    with pytest.raises(PermanentError) as raised:
        stages.transcode_track(copy, lambda percent, stage: None)

    assert raised.value.code == "duplicate_audio"
    assert str(first) in raised.value.message
    with transaction() as session:
        kinds = set(session.scalars(select(TrackFile.kind).where(TrackFile.track_id == copy)))
    assert kinds == {"source"}
    assert [p.name for p in blobs.blob_path(f"tracks/{copy}").iterdir()] == ["source"]
