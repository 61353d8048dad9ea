"""Renditions of an uploaded track: MP3 320k and 128k, Opus 96k, a faded preview, its loudness and fingerprint.

At most two ffmpeg processes run at a time (a media worker has two cores). One encodes MP3 320k and
128k and writes the Chromaprint fingerprint (one decode, two encoders, one fingerprinter) from the
start; beside it, the loudness measurement (EBU R128 with true peak, and the decoded length) rejects
silent, cut-off or too-long audio early, then the Opus
encode and the preview (a 30-second cut faded by ffmpeg's ``afade`` in the same process) follow on
the same core. Each output is decoded back as soon as it is made and must last as long as the
source (within ``DURATION_TOLERANCE_S``); the preview is decoded into pydub, which also checks
that it starts and ends faded. A failure, a cancellation or the time limit stops every ffmpeg of the
job. The caller gives a scratch directory and removes it.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydub import AudioSegment

from roadie.jobs.errors import PermanentError
from roadie.media import ffmpeg, fingerprint, sniff
from roadie.media.ffmpeg import BITEXACT, Probe, UndecodableError

DURATION_TOLERANCE_S = 0.05
FADE_IN_S, FADE_OUT_S = 0.5, 1.5
#: A faded edge: the first and last fiftieth of each fade (gain at most 2 %, -34 dB) peak below this.
FADED_EDGE_DBFS = -30.0
#: Below this integrated loudness EBU R128's absolute gate lets nothing through: the track is silent.
SILENCE_LUFS = -70.0
#: A decoded source this much shorter than its header promised was cut off (an estimate may be off a bit).
TRUNCATION_SLACK_S, TRUNCATION_SLACK_RATIO = 0.5, 0.01


@dataclass(frozen=True)
class Spec:
    kind: str
    extension: str
    mime_type: str
    codec_args: tuple[str, ...]


RENDITIONS = (
    Spec("mp3_320", "mp3", "audio/mpeg", ("-c:a", "libmp3lame", "-b:a", "320k")),
    Spec("mp3_128", "mp3", "audio/mpeg", ("-c:a", "libmp3lame", "-b:a", "128k")),
    Spec("opus_96", "opus", "audio/ogg", ("-c:a", "libopus", "-b:a", "96k")),
)
PREVIEW = Spec("preview", "mp3", "audio/mpeg", ("-c:a", "libmp3lame", "-b:a", "128k"))
#: One ffmpeg process per group (one decode, its encoders). The first runs from the start; the second
#: after the loudness measurement, on the other core; both take about as long.
ENCODE_GROUPS = (("mp3_320", "mp3_128"), ("opus_96",))


class TooLongError(PermanentError):
    code = "audio_too_long"


@dataclass(frozen=True)
class Loudness:
    integrated_lufs: float
    true_peak_dbtp: float
    range_lu: float
    gain_db: float


@dataclass(frozen=True)
class Output:
    spec: Spec
    path: Path
    seconds: float


@dataclass(frozen=True)
class Transcoded:
    duration_s: float
    loudness: Loudness
    preview_start_s: float
    preview_length_s: float
    outputs: list[Output]
    fingerprint: np.ndarray  # Chromaprint's raw items of the whole source


def normalisation_gain(integrated: float, true_peak: float, *, target: float, ceiling: float) -> float:
    """The playback gain to ``target`` LUFS; a positive gain stops where the true peak hits ``ceiling``.

    Turning a loud track down is always allowed; a quiet track whose peak is already above the
    ceiling is not turned up at all. Rounded to 0.01 dB, to nearest.
    """
    wanted = target - integrated
    if wanted > 0:
        wanted = max(0.0, min(wanted, ceiling - true_peak))
    return round(wanted, 2)


_SUMMARY = {
    "integrated": re.compile(r"I:\s+(-?[\d.]+|-inf) LUFS"),
    "range": re.compile(r"LRA:\s+(-?[\d.]+) LU\b"),
    "peak": re.compile(r"Peak:\s+(-?[\d.]+|-inf) dBFS"),
}


def parse_ebur128(stderr: str) -> tuple[float, float, float]:
    """Integrated loudness, true peak and loudness range from the ebur128 filter's summary."""
    summary = stderr[stderr.rfind("Summary:") :]
    found = {name: pattern.search(summary) for name, pattern in _SUMMARY.items()}
    if not all(found.values()):
        raise UndecodableError("the loudness measurement printed no summary")
    integrated, range_lu, peak = (float(found[name].group(1)) for name in ("integrated", "range", "peak"))  # type: ignore[union-attr]
    return integrated, peak, range_lu


def preview_window(duration_s: float, chosen_start_s: float | None, length_s: float) -> tuple[float, float]:
    """Start and length of the preview: the artist's start (default a third in), moved back to fit."""
    length = min(length_s, duration_s)
    start = duration_s / 3 if chosen_start_s is None else chosen_start_s
    return round(max(0.0, min(start, duration_s - length)), 3), round(length, 3)


def _channel_args(source: Probe) -> list[str]:
    """MP3 carries at most two channels: fold surround down to stereo."""
    return ["-ac", "2"] if source.channels > 2 else []


def encode_args(
    source_path: Path, source: Probe, work: Path, kinds: tuple[str, ...], fingerprint_path: Path | None = None
) -> tuple[list[str], list[Output]]:
    """One ffmpeg's arguments: one decode, an encoder per rendition, and the fingerprint when asked."""
    args = ["-xerror", "-i", str(source_path)]
    planned = []
    for spec in (spec for spec in RENDITIONS if spec.kind in kinds):
        path = work / f"{spec.kind}.{spec.extension}"
        args += ["-map", "0:a:0", "-vn", "-map_metadata", "-1", *_channel_args(source), *spec.codec_args]
        args += [*BITEXACT, str(path)]
        planned.append(Output(spec, path, 0.0))
    if fingerprint_path is not None:
        args += fingerprint.output_args(fingerprint_path)
    return args, planned


def preview_fades(length_s: float) -> tuple[float, float]:
    """The fade-in and fade-out lengths: half a second in and a second and a half out, at most a third each."""
    return min(FADE_IN_S, length_s / 3), min(FADE_OUT_S, length_s / 3)


def _make_preview(
    runs: ffmpeg.Runs, source_path: Path, source: Probe, work: Path, start_s: float, length_s: float
) -> Output:
    """Cut the window with input seeking (ffmpeg decodes only that), fade and encode it in the same process."""
    fade_in, fade_out = preview_fades(length_s)
    fades = f"afade=t=in:st=0:d={fade_in:.3f},afade=t=out:st={length_s - fade_out:.3f}:d={fade_out:.3f}"
    path = work / f"preview.{PREVIEW.extension}"
    args = ["-xerror", "-ss", f"{start_s:.3f}", "-t", f"{length_s:.3f}", "-i", str(source_path), "-map", "0:a:0"]
    args += ["-vn", "-af", fades, "-map_metadata", "-1", *_channel_args(source), *PREVIEW.codec_args, *BITEXACT]
    runs.run([*args, str(path)], "encoding the preview")
    return _check_preview(runs, path, fade_in, fade_out)


def _check_preview(runs: ffmpeg.Runs, path: Path, fade_in_s: float, fade_out_s: float) -> Output:
    """Decode the preview back into pydub: its length, and the proof that it starts and ends faded."""
    with runs.start(["-xerror", "-i", str(path), "-f", "wav", "pipe:1"], stdout_data=True) as decode:
        wav = decode.stdout.read()
        decode.finish(f"decoding {path.name} back", ffmpeg.BadOutputError)
    clip = AudioSegment.from_wav(io.BytesIO(wav))
    del wav
    head, tail = max(1, round(fade_in_s * 20)), max(1, round(fade_out_s * 20))  # milliseconds: a fiftieth
    for edge, where in ((clip[:head], "start"), (clip[-tail:], "end")):
        if edge.max_dBFS > FADED_EDGE_DBFS:
            raise ffmpeg.BadOutputError(f"the preview's {where} is not faded ({edge.max_dBFS:.1f} dBFS)")
    return Output(PREVIEW, path, clip.frame_count() / clip.frame_rate)


def transcode(
    source_path: Path,
    source: Probe,
    work: Path,
    *,
    preview_start_s: float | None,
    preview_length_s: float,
    max_duration_s: float,
    target_lufs: float,
    ceiling_dbtp: float,
    on_progress: Callable[[int, str], None],
) -> Transcoded:
    """Make every rendition of ``source_path`` in ``work`` and measure its loudness."""
    _check_not_cut_off(source_path)
    expected = source.duration_s or 0.0
    fingerprint_path = work / "fingerprint.raw"  # from the first group's decode: no second one for it
    plans = [
        encode_args(source_path, source, work, kinds, fingerprint_path if index == 0 else None)
        for index, kinds in enumerate(ENCODE_GROUPS)
    ]
    measure_args = ["-xerror", "-i", str(source_path), "-map", "0:a:0", "-vn"]
    measure_args += ["-af", "ebur128=peak=true:framelog=verbose", "-f", "null", "-"]
    runs = ffmpeg.Runs()

    def report(seconds: float) -> None:
        on_progress(_percent(seconds, expected, 0, 85), "encoding")

    def encode(args: list[str], planned: list[Output], progress: ffmpeg.ProgressCallback | None) -> list[Output]:
        runs.run(args, "encoding the renditions", progress)
        return _decode_back(runs, planned)  # while the other group still encodes

    def preview(start: float, length: float) -> list[Output]:
        return [_make_preview(runs, source_path, source, work, start, length)]

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ffmpeg") as pool:
        try:
            encodes = [pool.submit(encode, *plans[0], report)]
            # The ebur128 summary is an info line, hence the measuring process's log level.
            duration, stderr = pool.submit(runs.run, measure_args, "measuring loudness", loglevel="info").result()
            _check_length(duration, source, max_duration_s)
            loudness = _loudness(stderr, target_lufs, ceiling_dbtp)
            encodes += [pool.submit(encode, *plan, None) for plan in plans[1:]]
            start, length = preview_window(duration, preview_start_s, preview_length_s)
            encodes.append(pool.submit(preview, start, length))
            outputs = [output for done in encodes for output in done.result()]
        except BaseException:
            runs.stop()  # a failure, a cancellation or the time limit ends every ffmpeg of this job
            raise
    on_progress(90, "verifying")
    for output in outputs:
        _check_decoded(output, length if output.spec is PREVIEW else duration)
    return Transcoded(duration, loudness, start, length, outputs, fingerprint.read(fingerprint_path))


def _loudness(stderr: str, target_lufs: float, ceiling_dbtp: float) -> Loudness:
    integrated, true_peak, range_lu = parse_ebur128(stderr)
    if integrated <= SILENCE_LUFS or math.isinf(true_peak):
        raise PermanentError(
            f"the audio is silent (integrated loudness {integrated} LUFS): there is nothing to publish",
            code="silent_audio",
        )
    gain = normalisation_gain(integrated, true_peak, target=target_lufs, ceiling=ceiling_dbtp)
    return Loudness(integrated_lufs=integrated, true_peak_dbtp=true_peak, range_lu=range_lu, gain_db=gain)


def _percent(seconds: float, total: float, low: int, high: int) -> int:
    return low if total <= 0 else low + int((high - low) * min(seconds / total, 1.0))


def _cut_off(promised: float, found: float) -> bool:
    return found < promised - max(TRUNCATION_SLACK_S, promised * TRUNCATION_SLACK_RATIO)


def _check_not_cut_off(source_path: Path) -> None:
    """A WAV shorter than its header: ffmpeg would only report a corrupt packet, so say what it is first."""
    lengths = sniff.wav_lengths(source_path)
    if lengths is not None and _cut_off(*lengths):
        promised, held = lengths
        raise PermanentError(
            f"the file is cut off: its header promises {promised:.2f} s but the file holds only {held:.2f} s",
            code="source_truncated",
        )


def _check_length(duration: float, source: Probe, max_duration_s: float) -> None:
    if duration <= 0:
        raise UndecodableError("no audio could be decoded from the file")
    if duration > max_duration_s:
        raise TooLongError(f"the track lasts {duration:.1f} s; the limit is {max_duration_s:.0f} s")
    promised = source.duration_s
    if promised and _cut_off(promised, duration):
        raise PermanentError(
            f"the file is cut off: its header promises {promised:.2f} s but only {duration:.2f} s decode",
            code="source_truncated",
        )


def _decode_back(runs: ffmpeg.Runs, outputs: list[Output]) -> list[Output]:
    """Each output with the length it decodes to: the proof that it plays to its end."""
    return [Output(output.spec, output.path, ffmpeg.decoded_seconds(output.path, runs)) for output in outputs]


def _check_decoded(output: Output, wanted: float) -> None:
    if abs(output.seconds - wanted) > DURATION_TOLERANCE_S:
        raise ffmpeg.BadOutputError(
            f"{output.spec.kind} decodes to {output.seconds:.3f} s instead of {wanted:.3f} s "
            f"(tolerance {DURATION_TOLERANCE_S * 1000:.0f} ms)"
        )
