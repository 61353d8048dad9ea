"""What a track sounds like, measured with librosa on a mono numpy array that ffmpeg decoded.

ffmpeg decodes straight to 22,050 Hz mono float32 (10 minutes = 53 MB, a quarter of what
``librosa.load`` holds). Tempo and key are measured on ``window_s`` seconds from the middle of the
track, so their memory does not grow with its length; the RMS level and the waveform cover all of it.
Digital silence gives no tempo and no key, a floor level and a flat waveform: never a division by zero.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roadie.media import ffmpeg
from roadie.media.ffmpeg import UndecodableError

SAMPLE_RATE = 22_050
HOP = 512
WAVEFORM_POINTS = 1000
SILENCE_DBFS = -120.0
#: Fewer beats than this cannot give a tempo worth storing.
MIN_BEATS = 8
PITCHES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Krumhansl-Kessler key profiles (probe-tone ratings), tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@dataclass(frozen=True)
class Analysis:
    duration_s: float
    sample_rate: int
    channels: int
    bpm: float | None
    key: str | None
    key_confidence: float | None
    rms_dbfs: float
    peak_rms_dbfs: float
    waveform: list[list[float]]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def decode_mono(path: Path, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The whole file as mono float32 at ``rate``; UndecodableError when ffmpeg cannot read it to the end."""
    args = ["-xerror", "-i", str(path), "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(rate), "-f", "f32le", "pipe:1"]
    with ffmpeg.Run(args, stdout_data=True) as process:
        data = process.stdout.read()
        process.finish("decoding the source")
    return np.frombuffer(data, dtype=np.float32)


def middle(samples: np.ndarray, rate: int, window_s: float) -> np.ndarray:
    """At most ``window_s`` seconds from the middle (a view, not a copy)."""
    length = int(window_s * rate)
    if len(samples) <= length:
        return samples
    start = (len(samples) - length) // 2
    return samples[start : start + length]


def tempo(samples: np.ndarray, rate: int) -> float | None:
    """Beats per minute to 0.1, from the beat tracker's beat times rather than its tempo grid.

    librosa's tempo is one of 60·rate/(hop·lag) for whole lags (117.45 or 123.05 BPM, never 120, at
    hop 512). The beat times are accurate, so the tempo is the least-squares slope of beat time over
    beat number; a gap of two beats (one the tracker skipped) is numbered as two, so it does not
    bend the slope.
    """
    import librosa

    onsets = librosa.onset.onset_strength(y=samples, sr=rate, hop_length=HOP)
    if not np.any(onsets > 0):
        return None
    _, beats = librosa.beat.beat_track(onset_envelope=onsets, sr=rate, hop_length=HOP, units="time")
    if len(beats) < MIN_BEATS:
        return None
    gaps = np.diff(beats)
    interval = float(np.median(gaps))
    if interval <= 0:
        return None
    # Gap by gap, as the frame grid makes single gaps a little long or short; a skipped beat counts two.
    numbers = np.concatenate(([0.0], np.cumsum(np.maximum(np.round(gaps / interval), 1))))
    slope = float(np.polyfit(numbers, beats, 1)[0])
    return round(60.0 / slope, 1) if slope > 0 else None


def key(samples: np.ndarray, rate: int) -> tuple[str | None, float | None]:
    """Major or minor key by correlating the mean chroma with the Krumhansl-Kessler profiles.

    Returns the key and its correlation (the confidence); None for audio without pitch content.
    """
    import librosa

    if not np.any(samples):
        return None, None
    chroma = librosa.feature.chroma_stft(y=samples, sr=rate, hop_length=HOP).mean(axis=1)
    if not np.all(np.isfinite(chroma)) or np.ptp(chroma) <= 1e-9:
        return None, None
    best_name, best_r = None, -2.0
    for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)):
        for tonic in range(12):
            r = float(np.corrcoef(chroma, np.roll(profile, tonic))[0, 1])
            if r > best_r:
                best_name, best_r = f"{PITCHES[tonic]} {mode}", r
    return best_name, round(best_r, 3)


def dbfs(amplitude: float) -> float:
    """An RMS amplitude in dBFS, floored at SILENCE_DBFS (log of zero is not a level)."""
    if amplitude <= 10 ** (SILENCE_DBFS / 20):
        return SILENCE_DBFS
    return round(20 * float(np.log10(amplitude)), 2)


def rms_levels(samples: np.ndarray) -> tuple[float, float]:
    """Mean RMS of the whole track and the loudest 2048-sample frame's, in dBFS."""
    import librosa

    if len(samples) == 0:
        return SILENCE_DBFS, SILENCE_DBFS
    mean = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    frames = librosa.feature.rms(y=samples, frame_length=2048, hop_length=HOP)
    return dbfs(mean), dbfs(float(frames.max()))


def waveform(samples: np.ndarray, points: int = WAVEFORM_POINTS) -> list[list[float]]:
    """``points`` [min, max] pairs over equal slices of the track, for a player's waveform."""
    if len(samples) == 0:
        return [[0.0, 0.0]] * points
    edges = np.linspace(0, len(samples), points + 1).astype(np.int64)
    starts = np.minimum(edges[:-1], len(samples) - 1)
    # Every slice has at least one sample: reduceat on an empty slice would return its next neighbour.
    lows = np.minimum.reduceat(samples, starts)
    highs = np.maximum.reduceat(samples, starts)
    return [[round(float(lo), 4), round(float(hi), 4)] for lo, hi in zip(lows, highs, strict=True)]


def analyse(path: Path, *, sample_rate: int, channels: int, window_s: float) -> Analysis:
    """Measure a track; ``sample_rate`` and ``channels`` are the source's, from ffprobe."""
    samples = decode_mono(path)
    if len(samples) == 0:
        raise UndecodableError("no audio could be decoded from the file")
    excerpt = middle(samples, SAMPLE_RATE, window_s)
    rms, peak_rms = rms_levels(samples)
    found_key, confidence = key(excerpt, SAMPLE_RATE)
    return Analysis(
        duration_s=round(len(samples) / SAMPLE_RATE, 3),
        sample_rate=sample_rate,
        channels=channels,
        bpm=tempo(excerpt, SAMPLE_RATE),
        key=found_key,
        key_confidence=confidence,
        rms_dbfs=rms,
        peak_rms_dbfs=peak_rms,
        waveform=waveform(samples),
    )
