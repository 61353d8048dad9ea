"""Track upload intake: ``POST /v1/tracks`` (issue 3).

multipart/form-data with three parts: ``audio`` (the file), ``cover`` (optional image) and
``metadata`` (a JSON object, see ``TrackFields``). The key is checked before the body is read; the
files stream into the blob store; what they are is sniffed from their bytes; ffprobe reads the audio;
then one transaction creates the track and its ``track.ingest`` job. 202 with the job.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api import telemetry
from api.errors import json_response
from api.http import base_url, decode_json, parse, parse_body, require
from api.jobs import IdempotencyHeader
from api.multipart import StreamingForm
from roadie import quotas
from roadie.db import async_transaction
from roadie.ingest import upload
from roadie.ingest.upload import StagedFile, TrackFields
from roadie.jobs.intake import IntakeError
from roadie.jobs.views import JobView, job_view
from roadie.media import cover, ffmpeg, sniff
from roadie.settings import get_settings

log = logging.getLogger(__name__)


class TrackUpload(BaseModel):
    """The parts of the multipart body (``multipart/form-data``); ``metadata`` is a JSON part."""

    model_config = ConfigDict(extra="forbid")

    audio: bytes = Field(description="MP3, FLAC, WAV, Ogg, M4A, AAC or AIFF (sniffed from its bytes)")
    cover: bytes | None = Field(
        default=None,
        description="JPEG, PNG, WebP or GIF (sniffed from its bytes), at most `ROADIE_MAX_COVER_PIXELS` pixels; "
        "published as square JPEGs of 3000, 1000 and 300 px without EXIF",
    )
    metadata: TrackFields


class TrackAccepted(JobView):
    """The track's ``track.ingest`` job, and the track it creates."""

    track_id: uuid.UUID


def _sniff(part: str, head: bytes) -> None:
    """Refuse a file whose bytes are not what its part must hold (415), whatever its name says."""
    if not head:
        raise IntakeError(422, "empty_file", f"the {part} file is empty", [{"field": part, "reason": "empty file"}])
    if part == "audio" and sniff.audio_type(head) is None:
        accepted = "MP3, FLAC, WAV, Ogg, M4A, AAC or AIFF"
        raise IntakeError(
            415,
            "unsupported_media_type",
            f"the audio part is not audio ({accepted} expected)",
            [{"field": "audio", "reason": "not a supported audio format"}],
        )
    if part == "cover" and sniff.image_type(head) is None:
        raise IntakeError(
            415,
            "unsupported_media_type",
            "the cover is not an image (JPEG, PNG, WebP or GIF expected)",
            [{"field": "cover", "reason": "not a supported image format"}],
        )


def parse_fields(raw: bytes | None) -> TrackFields:
    """The ``metadata`` part as TrackFields, or a 422 naming each bad field (``metadata.title``, …)."""
    if raw is None:
        raise IntakeError(
            422, "validation_error", "the metadata part is missing", [{"field": "metadata", "reason": "required"}]
        )
    return parse_body(TrackFields, decode_json(raw, "metadata", 422), "metadata")


async def _probe(path: Path) -> ffmpeg.Probe:
    try:
        return await asyncio.to_thread(ffmpeg.probe, path)
    except ffmpeg.UndecodableError as exc:
        raise IntakeError(422, exc.code, exc.message, [{"field": "audio", "reason": exc.message}]) from exc
    except ffmpeg.ToolMissingError as exc:
        log.error("media.ffmpeg_missing", extra={"error": exc.message})
        raise IntakeError(503, exc.code, "uploads are unavailable: the API cannot inspect audio") from exc


async def _check_cover(path: Path, max_pixels: int) -> None:
    """A bomb or broken EXIF is refused here, before the upload is accepted (422 naming ``cover``)."""
    try:
        await asyncio.to_thread(cover.check, path, max_pixels)
    except cover.CoverError as exc:
        raise IntakeError(422, exc.code, exc.message, [{"field": "cover", "reason": exc.message}]) from exc


async def upload_track(request: Request) -> Response:
    settings = get_settings()
    key = parse(IdempotencyHeader, {"key": request.headers.get("idempotency-key")}, "Idempotency-Key").key
    async with async_transaction() as session:  # before reading a byte of the body
        client = await require(session, request, "tracks:write")
    limit = settings.max_upload_bytes + settings.max_cover_bytes + settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise IntakeError(413, "body_too_large", f"an upload is at most {limit} bytes")
    form = StreamingForm(
        file_limits={"audio": settings.max_upload_bytes, "cover": settings.max_cover_bytes},
        field_limit=settings.max_body_bytes,
        fields={"metadata"},
        sniff=_sniff,
        sniff_bytes=sniff.SNIFF_BYTES,
    )
    try:
        await form.read(request.headers.get("content-type", ""), request.stream())
        fields = parse_fields(form.fields.get("metadata"))
        audio_part = form.files.get("audio")
        if audio_part is None:
            raise IntakeError(
                422, "validation_error", "the audio part is missing", [{"field": "audio", "reason": "required"}]
            )
        upload.check_audio(await _probe(audio_part.blob.path), fields, settings.max_duration_s)
        audio = StagedFile(audio_part.blob, str(sniff.audio_type(audio_part.blob.head)), audio_part.filename)
        cover_part = form.files.get("cover")
        image: StagedFile | None = None
        if cover_part is not None:
            await _check_cover(cover_part.blob.path, settings.max_cover_pixels)
            image = StagedFile(cover_part.blob, str(sniff.image_type(cover_part.blob.head)), cover_part.filename)
        await quotas.charge(client, 1, key)
        accepted: upload.Accepted | None = None
        try:
            async with async_transaction() as session:
                accepted = await upload.accept(session, client, fields, audio, image, idempotency_key=key)
                view = job_view(accepted.submission.job, base_url=base_url(request))
        except BaseException:
            if accepted is not None:  # moved into place, but the transaction did not commit
                upload.delete_blobs(accepted.placed)
            raise
    finally:
        form.discard()  # whatever was not moved onto a track's keys (a replay's, a refusal's)
    headers = {"Location": view.url}
    if accepted.submission.replayed:
        headers["Idempotent-Replayed"] = "true"
    else:
        telemetry.count_accepted("track.ingest")
    log.info(
        "track.accepted",
        extra={"track_id": str(accepted.track_id), "job_id": str(view.id), "replayed": accepted.submission.replayed},
    )
    body = TrackAccepted(**{name: getattr(view, name) for name in view.model_fields_set}, track_id=accepted.track_id)
    return json_response(body, 202, headers)


routes: list[BaseRoute] = [Route("/v1/tracks", upload_track, methods=["POST"])]
