"""Chromaprint audio fingerprints: made inside the transcode's ffmpeg, indexed by sub-fingerprint, compared aligned.

ffmpeg's ``chromaprint`` muxer (Debian's ffmpeg links libchromaprint) is one more output of the MP3
encode, so the fingerprint costs no second decode of the source. A fingerprint is Chromaprint's raw
items: one 32-bit sub-fingerprint per ~0.124 s of audio, for the whole track.

Two recordings are compared by sliding one along the other (a trimmed upload starts some items later)
and taking the lowest bit error rate over the overlap: the similarity is ``1 - 2 * BER``, about 1 for
the same recording at any bitrate and 0 for unrelated audio (random bits differ half the time).

Candidates are found without reading every fingerprint: each track's distinct 28-bit item prefixes
(``hashes``) are in a GIN index, an upload's are looked up with ``&&`` and only the few tracks sharing
the most are compared in full (AcoustID's approach: the low bits are the ones a re-encode flips).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Chromaprint's default algorithm at its own sample rate: 4096-sample frames with a 1/3 overlap.
SAMPLE_RATE = 11025
ITEM_S = 4096 / 3 / SAMPLE_RATE
#: Items keep their top 28 bits in the index, as AcoustID's does.
HASH_SHIFT = 4
#: The item of digital silence; indexed, it would make every track with a quiet gap a candidate.
SILENCE_ITEM = 627964279
#: The furthest two recordings of one song may be shifted (trimmed at the start), in seconds.
MAX_OFFSET_S = 15.0
#: At least this share of the shorter fingerprint must overlap at the chosen alignment.
MIN_OVERLAP = 0.5


def output_args(path: Path) -> list[str]:
    """ffmpeg output options that write the input's first audio stream's raw fingerprint to ``path``."""
    mono = ["-ac", "1", "-ar", str(SAMPLE_RATE)]  # what Chromaprint analyses; ffmpeg's resampler does it
    return ["-map", "0:a:0", "-vn", *mono, "-f", "chromaprint", "-fp_format", "raw", str(path)]


def read(path: Path) -> np.ndarray:
    """The raw items ffmpeg wrote (native uint32, little-endian on every platform Roadie runs on)."""
    return np.fromfile(path, dtype="<u4")


def to_bytes(items: np.ndarray) -> bytes:
    return items.astype("<u4").tobytes()


def from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<u4")


def hashes(items: np.ndarray) -> list[int]:
    """The distinct 28-bit prefixes of the items, silence left out: what the index holds."""
    return sorted({int(item) >> HASH_SHIFT for item in items if item != SILENCE_ITEM})


@dataclass(frozen=True)
class Alignment:
    similarity: float
    offset_s: float  # how much later ``b`` starts in ``a``


def compare(a: np.ndarray, b: np.ndarray) -> Alignment:
    """The best alignment of two fingerprints within ``MAX_OFFSET_S``; similarity 0 when none overlaps enough."""
    shortest = min(len(a), len(b))
    best = Alignment(0.0, 0.0)
    if shortest == 0:
        return best
    reach = round(MAX_OFFSET_S / ITEM_S)
    for offset in range(-reach, reach + 1):
        x, y = a[max(0, offset) :], b[max(0, -offset) :]
        overlap = min(len(x), len(y))
        if overlap < MIN_OVERLAP * shortest:
            continue
        errors = int(np.bitwise_count(x[:overlap] ^ y[:overlap]).sum())
        similarity = max(0.0, 1 - 2 * errors / (32 * overlap))
        if similarity > best.similarity:
            best = Alignment(similarity, offset * ITEM_S)
    return best
