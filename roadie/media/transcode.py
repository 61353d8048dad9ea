"""Renditions of an uploaded track: MP3 320k and 128k, Opus 96k, a faded preview, and its loudness.

At most two ffmpeg processes run at a time (a media worker has two cores). One encodes MP3 320k and
128k (one decode, two encoders) from the start; beside it, the loudness measurement (EBU R128 with
true peak, and the decoded length) rejects silent, cut-off or too-long audio early, then the Opus
encode and the preview (pydub fades a 30-second cut) follow on the same core. Each output is
decoded back as soon as it is made and must last as long as the source (within
``DURATION_TOLERANCE_S``). A failure, a cancellation or the time limit stops every ffmpeg of the
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

from pydub import AudioSegment

from roadie.jobs.errors import PermanentError
from roadie.media import ffmpeg, sniff
from roadie.media.ffmpeg import BITEXACT, Probe, UndecodableError

DURATION_TOLERANCE_S = 0.05
FADE_IN_MS, FADE_OUT_MS = 500, 1500
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


def _encode_args(
    source_path: Path, source: Probe, work: Path, kinds: tuple[str, ...]
) -> tuple[list[str], list[Output]]:
    args = ["-xerror", "-i", str(source_path)]
    planned = []
    for spec in (spec for spec in RENDITIONS if spec.kind in kinds):
        path = work / f"{spec.kind}.{spec.extension}"
        args += ["-map", "0:a:0", "-vn", "-map_metadata", "-1", *_channel_args(source), *spec.codec_args]
        args += [*BITEXACT, str(path)]
        planned.append(Output(spec, path, 0.0))
    return args, planned


def _make_preview(
    runs: ffmpeg.Runs, source_path: Path, source: Probe, work: Path, start_s: float, length_s: float
) -> Path:
    """Cut the window with input seeking (ffmpeg decodes only that), fade it with pydub, encode it."""
    cut_args = ["-ss", f"{start_s:.3f}", "-t", f"{length_s:.3f}", "-i", str(source_path), "-map", "0:a:0", "-vn"]
    with runs.start(
        [*cut_args, *_channel_args(source), "-c:a", "pcm_s16le", "-f", "wav", "pipe:1"], stdout_data=True
    ) as cut:
        wav = cut.stdout.read()
        cut.finish("cutting the preview")
    clip = AudioSegment.from_wav(io.BytesIO(wav))
    del wav
    fade_out = min(FADE_OUT_MS, len(clip) // 3)
    faded = clip.fade_in(min(FADE_IN_MS, len(clip) // 3)).fade_out(fade_out)
    wav_path, path = work / "preview.wav", work / f"preview.{PREVIEW.extension}"
    faded.export(wav_path, format="wav")  # pydub writes a plain WAV itself: no temporary files of its own
    runs.run(
        ["-i", str(wav_path), "-map_metadata", "-1", *PREVIEW.codec_args, *BITEXACT, str(path)], "encoding the preview"
    )
    wav_path.unlink()
    return path


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
    plans = [_encode_args(source_path, source, work, kinds) for kinds in ENCODE_GROUPS]
    measure_args = ["-xerror", "-i", str(source_path), "-map", "0:a:0", "-vn"]
    measure_args += ["-af", "ebur128=peak=true:framelog=verbose", "-f", "null", "-"]
    runs = ffmpeg.Runs()

    def report(seconds: float) -> None:
        on_progress(_percent(seconds, expected, 0, 85), "encoding")

    def encode(args: list[str], planned: list[Output], progress: ffmpeg.ProgressCallback | None) -> list[Output]:
        runs.run(args, "encoding the renditions", progress)
        return _decode_back(runs, planned)  # while the other group still encodes

    def preview(start: float, length: float) -> list[Output]:
        return _decode_back(runs, [Output(PREVIEW, _make_preview(runs, source_path, source, work, start, length), 0)])

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
    return Transcoded(duration, loudness, start, length, outputs)


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
