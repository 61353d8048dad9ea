"""The media stages' steps around the audio work: read the track, work without a transaction, record.

Each stage is idempotent: a re-run makes the same files (ffmpeg runs bit-exact) under the same blob
keys and updates the same rows, one per track and kind; a file whose bytes did not change keeps its
CID and pin state.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.dialects.postgresql import insert

from models.music import Track, TrackFile
from roadie import blobs
from roadie.db import transaction
from roadie.ingest import duplicates
from roadie.jobs.errors import PermanentError
from roadie.media import analysis, cover, ffmpeg, transcode
from roadie.settings import get_settings

Progress = Callable[[int, str | None], None]


class Throttled:
    """Passes progress on at most once a second (each report is a transaction), and every new stage."""

    def __init__(self, report: Progress, interval_s: float = 1.0) -> None:
        self.report, self.interval_s = report, interval_s
        self._last, self._stage = 0.0, ""

    def __call__(self, percent: int, stage: str) -> None:
        now = time.monotonic()
        if stage != self._stage or now - self._last >= self.interval_s:
            self._last, self._stage = now, stage
            self.report(percent, stage)


@dataclass(frozen=True)
class Source:
    path: Path
    preview_start_ms: int | None


def load_source(track_id: uuid.UUID) -> Source:
    """The track's uploaded file in the blob store; a clear failure when the track or its file is gone."""
    with transaction() as session:
        track = session.get(Track, track_id)
        if track is None:
            raise PermanentError(f"no track {track_id}", code="track_not_found")
        key = session.scalar(
            select(TrackFile.storage_key).where(TrackFile.track_id == track_id, TrackFile.kind == "source")
        )
        preview_start_ms = track.preview_start_ms
    path = blobs.blob_path(key) if key else None
    if path is None or not path.is_file():
        raise PermanentError(f"track {track_id} has no source file in the blob store", code="source_missing")
    return Source(path, preview_start_ms)


def _decimal(value: float) -> Decimal:
    return Decimal(str(value))


def record_file(
    session: Any, track_id: uuid.UUID, kind: str, blob: blobs.Blob, mime_type: str, file_name: str | None
) -> None:
    """Insert or update the track's file of this kind; new bytes are pinned anew, the same bytes keep their pin."""
    changed = TrackFile.sha256.is_distinct_from(insert(TrackFile).excluded.sha256)
    statement = insert(TrackFile).values(
        track_id=track_id,
        kind=kind,
        storage_key=blob.key,
        sha256=blob.sha256,
        size_bytes=blob.size,
        mime_type=mime_type,
        file_name=file_name,
        pin_state="pending",
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[TrackFile.track_id, TrackFile.kind],
            set_={
                "storage_key": statement.excluded.storage_key,
                "sha256": statement.excluded.sha256,
                "size_bytes": statement.excluded.size_bytes,
                "mime_type": statement.excluded.mime_type,
                "file_name": statement.excluded.file_name,
                "cid": case((changed, None), else_=TrackFile.cid),
                "pin_state": case((changed, "pending"), else_=TrackFile.pin_state),
            },
        )
    )


def transcode_track(track_id: uuid.UUID, progress: Progress) -> dict[str, Any]:
    """media.transcode: renditions and preview into the blob store, loudness and gain onto the track.

    The fingerprint made in the same ffmpeg is matched against earlier tracks' (``duplicates``).
    """
    settings = get_settings()
    source = load_source(track_id)
    probe = ffmpeg.probe(source.path)
    with blobs.work_dir("transcode-") as work:
        done = transcode.transcode(
            source.path,
            probe,
            work,
            preview_start_s=None if source.preview_start_ms is None else source.preview_start_ms / 1000,
            preview_length_s=settings.preview_length_s,
            max_duration_s=settings.max_duration_s,
            target_lufs=settings.target_lufs,
            ceiling_dbtp=settings.true_peak_ceiling_dbtp,
            on_progress=Throttled(progress),
        )
        # Before storing anything: a rejected duplicate leaves no rendition behind.
        verdict = duplicates.record(
            track_id,
            done.fingerprint,
            policy=settings.duplicate_audio_policy,
            threshold=settings.duplicate_audio_similarity,
        )
        if verdict.decision == "reject":
            raise PermanentError(
                f"the audio matches track {verdict.track_id} (similarity {verdict.similarity:.3f}); "
                "duplicates are rejected",
                code="duplicate_audio",
            )
        progress(95, "storing")
        stored = []
        for output in done.outputs:
            name = f"{output.spec.kind}.{output.spec.extension}"
            stored.append((output, name, blobs.store_file(output.path, f"tracks/{track_id}/{name}")))
    loudness = done.loudness
    with transaction() as session:
        for output, name, blob in stored:
            record_file(session, track_id, output.spec.kind, blob, output.spec.mime_type, name)
        track = session.get(Track, track_id, with_for_update=True)
        if track is None:
            raise PermanentError(f"track {track_id} was deleted while it was transcoded", code="track_not_found")
        track.loudness_lufs = _decimal(loudness.integrated_lufs)
        track.true_peak_dbtp = _decimal(loudness.true_peak_dbtp)
        track.loudness_range_lu = _decimal(loudness.range_lu)
        track.gain_db = _decimal(loudness.gain_db)
    return {
        "duration_s": done.duration_s,
        "loudness": {
            "integrated_lufs": loudness.integrated_lufs,
            "true_peak_dbtp": loudness.true_peak_dbtp,
            "range_lu": loudness.range_lu,
            "gain_db": loudness.gain_db,
            "target_lufs": settings.target_lufs,
        },
        "preview": {"start_s": done.preview_start_s, "length_s": done.preview_length_s},
        "fingerprint": {"items": len(done.fingerprint), "duplicate_of": verdict.as_json()},
        "files": {
            output.spec.kind: {
                "key": blob.key,
                "sha256": blob.sha256,
                "size_bytes": blob.size,
                "mime_type": output.spec.mime_type,
                "decoded_s": output.seconds,
            }
            for output, _, blob in stored
        },
    }


def analyse_track(track_id: uuid.UUID, progress: Progress) -> dict[str, Any]:
    """media.analyse: duration, format, tempo, key, RMS level and waveform onto the track."""
    source = load_source(track_id)
    probe = ffmpeg.probe(source.path)
    progress(10, "analysing")
    found = analysis.analyse(
        source.path, sample_rate=probe.sample_rate, channels=probe.channels, window_s=get_settings().analysis_window_s
    )
    with transaction() as session:
        track = session.get(Track, track_id, with_for_update=True)
        if track is None:
            raise PermanentError(f"track {track_id} was deleted while it was analysed", code="track_not_found")
        track.duration_ms = round(found.duration_s * 1000)
        track.sample_rate, track.channels = found.sample_rate, found.channels
        track.bpm = None if found.bpm is None else _decimal(found.bpm)
        track.musical_key = found.key
        track.rms_dbfs = _decimal(found.rms_dbfs)
        track.waveform = {"points": len(found.waveform), "peaks": found.waveform}
    return found.as_json()


def cover_track(track_id: uuid.UUID) -> dict[str, Any]:
    """media.cover: the uploaded cover's square stills (3000, 1000, 300 px, no EXIF) into the blob store.

    Nothing is stored until every still is made, so a cover that cannot be published leaves no blob.
    """
    with transaction() as session:
        if session.get(Track, track_id) is None:
            raise PermanentError(f"no track {track_id}", code="track_not_found")
        key = session.scalar(
            select(TrackFile.storage_key).where(TrackFile.track_id == track_id, TrackFile.kind == "cover")
        )
    if key is None:
        return {"files": {}}  # no cover: the metadata stage draws the waveform instead
    path = blobs.blob_path(key)
    if not path.is_file():
        raise PermanentError(f"track {track_id}'s cover is not in the blob store", code="cover_missing")
    with blobs.work_dir("cover-") as work:
        stills = cover.normalise(path, work, get_settings().max_cover_pixels)
        stored = [(still, blobs.store_file(still.path, f"tracks/{track_id}/{still.path.name}")) for still in stills]
    with transaction() as session:
        for still, blob in stored:
            record_file(session, track_id, still.kind, blob, cover.MIME_TYPE, still.path.name)
    return {
        "files": {
            still.kind: {"key": blob.key, "sha256": blob.sha256, "size_bytes": blob.size, "mime_type": cover.MIME_TYPE}
            for still, blob in stored
        }
    }
