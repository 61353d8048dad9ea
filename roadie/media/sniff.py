"""What a file is, from its first bytes (magic numbers), never from its name or declared type."""

from __future__ import annotations

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
