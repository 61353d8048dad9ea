"""What a file is, from its first bytes (magic numbers), never from its name or declared type."""

from __future__ import annotations

import struct
from pathlib import Path

import filetype

#: Audio containers the media pool transcodes, by sniffed type, as stored (the IANA names).
AUDIO_TYPES = {
    "audio/mpeg": "audio/mpeg",
    "audio/x-flac": "audio/flac",
    "audio/x-wav": "audio/wav",
    "audio/ogg": "audio/ogg",
    "audio/mp4": "audio/mp4",
    "audio/aac": "audio/aac",
    "audio/x-aiff": "audio/aiff",
}
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"})
#: Enough bytes for every matcher filetype has.
SNIFF_BYTES = 512


def audio_type(head: bytes) -> str | None:
    """The MIME type of an accepted audio container, or None."""
    kind = filetype.guess(head)
    return AUDIO_TYPES.get(kind.mime) if kind is not None else None


def image_type(head: bytes) -> str | None:
    """The MIME type of an accepted cover image (JPEG, PNG, WebP, GIF), or None."""
    kind = filetype.guess(head)
    return kind.mime if kind is not None and kind.mime in IMAGE_TYPES else None


#: The data sizes a WAV writer puts when it does not know the length yet: read to the end of the file.
_WAV_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


def wav_lengths(path: Path) -> tuple[float, float] | None:
    """Seconds of audio a RIFF/WAVE header declares and seconds the file holds; None for another file.

    ffprobe sizes a WAV by the file, so only the header tells that the file was cut off.
    """
    with path.open("rb") as handle:
        header = handle.read(12)
        if header[:4] != b"RIFF" or header[8:] != b"WAVE":
            return None
        byte_rate = 0
        while len(chunk := handle.read(8)) == 8:
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"fmt ":
                fmt = handle.read(12)
                byte_rate = struct.unpack("<I", fmt[8:12])[0] if len(fmt) == 12 else 0
                handle.seek(size + size % 2 - len(fmt), 1)
            elif name == b"data":
                if not byte_rate or size in _WAV_UNKNOWN_SIZES:
                    return None
                held = path.stat().st_size - handle.tell()
                return size / byte_rate, min(size, held) / byte_rate
            else:
                handle.seek(size + size % 2, 1)
    return None
