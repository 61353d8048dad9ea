"""NFT metadata JSON of a track (Metaplex token standard, audio), built, validated and pinned.

The document depends only on the track's measured fields and the CIDs of its pinned files, and is encoded
with sorted keys and compact separators, so the same inputs give the same bytes and the same CID. It is
validated against ``nft_metadata.schema.json`` before anything is written. The image is the cover's 1000 px
square still (``media.cover``); a track without a cover gets a waveform image drawn from its peaks
(``tracks.waveform = {"peaks": [[min, max], ...]}``, values in -1..1), stored and pinned as its ``waveform`` file.
"""

from __future__ import annotations

import io
import json
import uuid
from functools import lru_cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from PIL import Image, ImageDraw
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from models.music import Track, TrackFile
from roadie.blobs import BlobWriter
from roadie.db import transaction
from roadie.ipfs.pinning import FileToPin, pin_file
from roadie.jobs.errors import PermanentError
from roadie.settings import get_settings

#: The cover still that is the NFT's ``image`` (1000 px square; 3000 px is heavy for wallets, 300 px too small).
IMAGE_KIND = "cover_1000"
#: Audio renditions listed in ``properties.files``, in this order, after the image.
LISTED_AUDIO = ("mp3_320", "mp3_128", "opus_96")
WAVEFORM_SIZE = (1000, 200)
WAVEFORM_COLOUR = (29, 185, 84, 255)


@lru_cache(maxsize=1)
def schema_validator() -> Draft202012Validator:
    schema = json.loads(resources.files("roadie.ipfs").joinpath("nft_metadata.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def validate_metadata(document: dict[str, Any]) -> None:
    """Refuse a document the schema rejects, naming every offending field."""
    errors = sorted(schema_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        reasons = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(document)'}: {e.message}" for e in errors)
        raise PermanentError(f"NFT metadata does not follow the schema: {reasons}", code="metadata_invalid")


def encode_metadata(document: dict[str, Any]) -> bytes:
    """Canonical bytes: sorted keys, no spaces, UTF-8; the same document always gives the same CID."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _uri(cid: str, ext: str | None = None) -> str:
    return f"ipfs://{cid}" + (f"?ext={ext}" if ext else "")


def _pinned_uri(file: TrackFile, ext: str | None = None) -> str:
    if file.cid is None or file.pin_state != "pinned":
        raise ValueError(f"the {file.kind} file is not pinned")
    return _uri(file.cid, ext)


def build_metadata(track: Track, files: dict[str, TrackFile], image: TrackFile) -> dict[str, Any]:
    """The metadata document of a track whose ``mp3_320`` and image are pinned."""
    settings = get_settings()
    measured: list[tuple[str, Any]] = [
        ("Genre", track.genre),
        ("BPM", None if track.bpm is None else float(track.bpm)),
        ("Key", track.musical_key),
        ("Duration (s)", None if track.duration_ms is None else track.duration_ms / 1000),
        ("Loudness (LUFS)", None if track.loudness_lufs is None else float(track.loudness_lufs)),
    ]
    listed = [{"uri": _pinned_uri(image), "type": image.mime_type}]
    listed += [
        {"uri": _pinned_uri(f, "mp3" if kind == "mp3_320" else None), "type": f.mime_type}
        for kind in LISTED_AUDIO
        if (f := files.get(kind)) is not None and f.pin_state == "pinned"
    ]
    return {
        "name": track.title,
        "symbol": settings.nft_symbol,
        "description": track.description or "",
        "image": _pinned_uri(image),
        "animation_url": _pinned_uri(files["mp3_320"], "mp3"),
        "external_url": f"{settings.nft_external_url_base.rstrip('/')}/{track.id}",
        "attributes": [{"trait_type": name, "value": value} for name, value in measured if value is not None],
        "properties": {"files": listed, "category": "audio"},
    }


def waveform_png(waveform: dict[str, Any] | None) -> bytes:
    """A PNG of the track's min/max peaks: one vertical bar per pair, transparent background."""
    peaks = (waveform or {}).get("peaks")
    if not isinstance(peaks, list) or not peaks:
        raise PermanentError("the track has no cover and no waveform peaks to draw one", code="no_image")
    width, height = WAVEFORM_SIZE
    image = Image.new("RGBA", WAVEFORM_SIZE, (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    middle = (height - 1) / 2
    for index, (low, high) in enumerate(peaks):
        x = index * width // len(peaks)
        top = round(middle - max(-1.0, min(1.0, float(high))) * middle)
        bottom = round(middle - max(-1.0, min(1.0, float(low))) * middle)
        draw.line([(x, top), (x, bottom)], fill=WAVEFORM_COLOUR)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _store_generated(track_id: uuid.UUID, kind: str, file_name: str, mime: str, data: bytes) -> tuple[FileToPin, bool]:
    """Keep generated bytes as the track's ``kind`` file; True when exactly these bytes are pinned already."""
    key = f"tracks/{track_id}/{file_name}"
    with BlobWriter() as writer:  # atomic: readers see the old file or the new one, never half of one
        writer.write(data)
        digest = writer.commit(key).sha256
    with transaction() as session:
        values = {"storage_key": key, "sha256": digest, "size_bytes": len(data), "mime_type": mime}
        changed = session.execute(
            insert(TrackFile)
            .values(id=uuid.uuid4(), track_id=track_id, kind=kind, file_name=file_name, pin_state="pending", **values)
            .on_conflict_do_update(
                index_elements=["track_id", "kind"],
                set_={**values, "pin_state": "pending"},
                where=(TrackFile.sha256 != digest) | (TrackFile.pin_state != "pinned"),
            )
            .returning(TrackFile.id)
        ).scalar_one_or_none()
        row = session.scalars(select(TrackFile).where(TrackFile.track_id == track_id, TrackFile.kind == kind)).one()
        return FileToPin(row.id, kind, key, digest, mime, row.cid), changed is None


def _files_by_kind(track_id: uuid.UUID) -> tuple[Track, dict[str, TrackFile]]:
    with transaction() as session:
        track = session.get(Track, track_id)
        if track is None:
            raise PermanentError(f"track {track_id} does not exist", code="track_not_found")
        return track, {f.kind: f for f in track.files}


def pin_metadata(track_id: uuid.UUID) -> dict[str, Any]:
    """Build the track's NFT metadata, validate it, keep it as its ``metadata`` file and pin it."""
    track, files = _files_by_kind(track_id)
    mp3, image = files.get("mp3_320"), files.get(IMAGE_KIND)
    if mp3 is None or mp3.pin_state != "pinned":
        raise PermanentError("the MP3 320 rendition is not pinned yet; run ipfs.pin_track first", code="not_pinned")
    has_cover = image is not None or "cover" in files
    if has_cover and (image is None or image.pin_state != "pinned"):  # never silently the waveform
        raise PermanentError(
            f"the cover's {IMAGE_KIND} still is not pinned yet; run media.cover and ipfs.pin_track first",
            code="not_pinned",
        )
    if image is None:  # no cover: the waveform image, drawn (again) unless exactly these bytes are pinned
        waveform, pinned = _store_generated(
            track_id, "waveform", "waveform.png", "image/png", waveform_png(track.waveform)
        )
        if not pinned:
            pin_file(waveform)
        track, files = _files_by_kind(track_id)
        image = files["waveform"]
    document = build_metadata(track, files, image)
    validate_metadata(document)
    stored, pinned = _store_generated(
        track_id, "metadata", "metadata.json", "application/json", encode_metadata(document)
    )
    cid = stored.cid if pinned and stored.cid else pin_file(stored)["cid"]
    return {
        "track_id": str(track_id),
        "cid": cid,
        "uri": _uri(cid),
        "image": document["image"],
        "animation_url": document["animation_url"],
    }
