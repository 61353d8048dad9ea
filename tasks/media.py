"""Media pool job types: transcoding, audio analysis and cover stills of uploaded tracks, and scratch sweeping."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import current_app, shared_task, signals
from pydantic import BaseModel, ConfigDict

from roadie import blobs
from roadie.ingest import stages
from roadie.jobs.runtime import JobContext
from roadie.jobs.types import job_type
from roadie.media import ffmpeg

log = logging.getLogger(__name__)


class TrackPayload(BaseModel):
    """A stage of the ingest pipeline works on one track."""

    model_config = ConfigDict(extra="forbid")

    track_id: uuid.UUID


@job_type(
    "media.transcode", TrackPayload, queue="media", max_attempts=3, soft_time_limit_s=1800, hard_time_limit_s=1860
)
def transcode(payload: TrackPayload, context: JobContext) -> dict[str, Any]:
    """Encode MP3 320k/128k, Opus 96k and the preview; measure loudness and the gain to the target."""
    return stages.transcode_track(payload.track_id, context.progress)


@job_type("media.analyse", TrackPayload, queue="media", max_attempts=3, soft_time_limit_s=900, hard_time_limit_s=960)
def analyse(payload: TrackPayload, context: JobContext) -> dict[str, Any]:
    """Measure duration, format, tempo, key, RMS level and the player's waveform."""
    return stages.analyse_track(payload.track_id, context.progress)


@job_type("media.cover", TrackPayload, queue="media", max_attempts=3, soft_time_limit_s=300, hard_time_limit_s=360)
def cover(payload: TrackPayload, context: JobContext) -> dict[str, Any]:
    """Normalise the uploaded cover to square JPEGs of 3000, 1000 and 300 px with no EXIF."""
    return stages.cover_track(payload.track_id)


@shared_task(name="media.sweep_scratch", ignore_result=True)
def sweep_scratch() -> int:
    """Remove scratch folders of media work whose process died (beat sends this to the media queue)."""
    removed = blobs.sweep_scratch()
    if removed:
        log.info("media.scratch_swept", extra={"removed": removed})
    return len(removed)


def _consumes_media(app: Any) -> bool:
    amqp = getattr(app, "amqp", None)
    return amqp is not None and "media" in set(amqp.queues.consume_from or amqp.queues)


@signals.worker_process_init.connect
def _sweep_scratch_at_start(**_: Any) -> None:
    """Each media pool process sweeps as it starts: the one replacing a killed child removes its scratch."""
    if _consumes_media(current_app):
        try:
            sweep_scratch()
        except OSError as exc:  # the next sweep tries again; the process still serves
            log.warning("media.scratch_sweep_failed", extra={"error": str(exc)})


@signals.worker_init.connect
def _refuse_to_start_without_ffmpeg(sender: Any = None, **_: Any) -> None:
    """A worker that consumes the media queue needs ffmpeg (with Chromaprint) and ffprobe: say so at start."""
    if not _consumes_media(getattr(sender, "app", None)):
        return
    try:
        ffmpeg.tools()
        ffmpeg.require_chromaprint()
    except ffmpeg.ToolMissingError as exc:
        log.critical("media.ffmpeg_missing", extra={"error": str(exc)})
        raise SystemExit(f"media worker cannot start: {exc}") from exc
