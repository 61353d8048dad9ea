"""Transcoding with real ffmpeg: renditions that decode back to the source's length, loudness, preview, bad files."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from roadie import blobs
from roadie.jobs.errors import PermanentError
from roadie.media import ffmpeg, transcode
from roadie.settings import get_settings
from tests.fixtures.media import BAD_SOURCES, AudioFiles

Run = Callable[..., transcode.Transcoded]


@pytest.fixture
def run(blob_dir: Path) -> Run:
    def run(path: Path, *, preview_start_s: float | None = None, max_duration_s: float = 600) -> transcode.Transcoded:
        with blobs.work_dir() as work:
            done = transcode.transcode(
                path,
                ffmpeg.probe(path),
                work,
                preview_start_s=preview_start_s,
                preview_length_s=30,
                max_duration_s=max_duration_s,
                target_lufs=-14,
                ceiling_dbtp=-1,
                on_progress=lambda percent, stage: None,
            )
            for output in done.outputs:  # keep them past the scratch directory
                output.path.rename(blob_dir / output.path.name)
            return dataclasses.replace(
                done, outputs=[transcode.Output(o.spec, blob_dir / o.path.name, o.seconds) for o in done.outputs]
            )

    return run


def test_every_rendition_decodes_back_to_the_source_length(audio: AudioFiles, run: Run) -> None:
    done = run(audio.song("song-45s.flac", 45))

    assert done.duration_s == pytest.approx(45, abs=0.001)
    kinds = {o.spec.kind: o for o in done.outputs}
    assert set(kinds) == {"mp3_320", "mp3_128", "opus_96", "preview"}
    for kind in ("mp3_320", "mp3_128", "opus_96"):
        assert kinds[kind].seconds == pytest.approx(45, abs=transcode.DURATION_TOLERANCE_S)
    probes = {kind: ffmpeg.probe(o.path) for kind, o in kinds.items()}
    assert (probes["mp3_320"].codec, probes["opus_96"].codec) == ("mp3", "opus")
    assert kinds["mp3_320"].path.stat().st_size > 2 * kinds["mp3_128"].path.stat().st_size


def test_the_preview_is_thirty_seconds_from_a_third_in_with_fades(audio: AudioFiles, run: Run) -> None:
    done = run(audio.song("song-60s.wav", 60))

    assert (done.preview_start_s, done.preview_length_s) == (20.0, 30.0)
    preview = next(o for o in done.outputs if o.spec.kind == "preview")
    assert preview.seconds == pytest.approx(30, abs=transcode.DURATION_TOLERANCE_S)
    from roadie.media.analysis import decode_mono

    samples = decode_mono(preview.path)
    edge = int(0.05 * 22050)
    middle = len(samples) // 2
    # Faded in and out: the first and last 50 ms are far quieter than the middle.
    assert abs(samples[:edge]).max() < 0.2 * abs(samples[middle - edge : middle + edge]).max()
    assert abs(samples[-edge:]).max() < 0.2 * abs(samples[middle - edge : middle + edge]).max()


def test_a_preview_that_does_not_fade_is_refused_as_invalid_output(audio: AudioFiles) -> None:
    unfaded = audio.song("unfaded-preview.mp3", 30)

    with pytest.raises(ffmpeg.BadOutputError, match="start is not faded"):
        transcode._check_preview(ffmpeg.Runs(), unfaded, *transcode.preview_fades(30))


def test_the_artists_preview_start_is_kept_and_moved_back_only_to_fit(audio: AudioFiles, run: Run) -> None:
    path = audio.song("song-60s.wav", 60)

    assert run(path, preview_start_s=5).preview_start_s == 5.0
    assert run(path, preview_start_s=50).preview_start_s == 30.0
    short = run(audio.song("song-12s.wav", 12))
    assert (short.preview_start_s, short.preview_length_s) == (0.0, 12.0)


def test_loudness_is_measured_and_the_gain_reaches_the_target_within_the_peak_ceiling(
    audio: AudioFiles, run: Run
) -> None:
    loudness = run(audio.song("song-12s.wav", 12)).loudness

    assert -25 < loudness.integrated_lufs < -15
    assert loudness.true_peak_dbtp < 0
    assert loudness.gain_db == transcode.normalisation_gain(
        loudness.integrated_lufs, loudness.true_peak_dbtp, target=-14, ceiling=-1
    )
    assert loudness.true_peak_dbtp + loudness.gain_db <= -1 + 1e-9


@pytest.mark.parametrize(
    ("integrated", "peak", "gain"),
    [
        (-19.0, -2.3, 1.3),  # wants +5 dB, the true peak allows +1.3
        (-19.0, -8.0, 5.0),  # room enough: the full gain
        (-9.0, -0.1, -5.0),  # loud: always turned down
        (-20.0, -0.5, 0.0),  # quiet but already past the ceiling: left alone
    ],
)
def test_normalisation_gain(integrated: float, peak: float, gain: float) -> None:
    assert transcode.normalisation_gain(integrated, peak, target=-14, ceiling=-1) == gain


def test_the_same_source_gives_the_same_bytes(audio: AudioFiles, run: Run) -> None:
    path = audio.song("song-12s.wav", 12)

    first = {o.spec.kind: o.path.read_bytes() for o in run(path).outputs}
    second = {o.spec.kind: o.path.read_bytes() for o in run(path).outputs}

    assert first == second


@pytest.mark.parametrize(("make", "code"), BAD_SOURCES)
def test_bad_sources_fail_with_a_clear_code(
    audio: AudioFiles, run: Run, make: Callable[[AudioFiles], Path], code: str
) -> None:
    with pytest.raises(PermanentError) as failure:
        run(make(audio))

    assert failure.value.code == code


def test_a_wav_cut_off_short_of_its_header_names_both_lengths(audio: AudioFiles, run: Run) -> None:
    with pytest.raises(PermanentError) as failure:
        run(audio.truncated_wav())

    assert failure.value.code == "source_truncated"
    assert str(failure.value) == "the file is cut off: its header promises 1000.00 s but the file holds only 1.00 s"


def test_a_track_over_the_limit_fails(audio: AudioFiles, run: Run) -> None:
    with pytest.raises(PermanentError) as failure:
        run(audio.song("song-12s.wav", 12), max_duration_s=10)

    assert failure.value.code == "audio_too_long"


def test_scratch_files_are_removed_after_success_and_after_failure(audio: AudioFiles, blob_dir: Path, run: Run) -> None:
    run(audio.song("song-12s.wav", 12))
    with pytest.raises(PermanentError):
        run(audio.corrupt_flac())

    assert list((blob_dir / blobs.TMP_DIR).iterdir()) == []


@contextlib.contextmanager
def _ffmpeg_at(monkeypatch: pytest.MonkeyPatch, path: str) -> Iterator[None]:
    """``ROADIE_FFMPEG_PATH`` set to ``path`` inside the block, and the cached settings and tools with it."""
    monkeypatch.setenv("ROADIE_FFMPEG_PATH", path)
    get_settings.cache_clear()
    ffmpeg.tools.cache_clear()
    try:
        yield
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        ffmpeg.tools.cache_clear()


def test_a_missing_ffmpeg_is_named_with_the_setting_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    with (
        _ffmpeg_at(monkeypatch, "/nonexistent/ffmpeg"),
        pytest.raises(ffmpeg.ToolMissingError, match="ROADIE_FFMPEG_PATH"),
    ):
        ffmpeg.tools()


def test_an_ffmpeg_without_chromaprint_is_named_as_the_problem(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ffmpeg.require_chromaprint()  # Debian's ffmpeg has it
    built_without = tmp_path / "ffmpeg"  # an ffmpeg whose build lists no chromaprint muxer
    built_without.write_text("#!/bin/sh\nprintf 'File formats:\\n E mp3             MP3\\n'\n")
    built_without.chmod(0o755)
    with _ffmpeg_at(monkeypatch, str(built_without)), pytest.raises(ffmpeg.ToolMissingError, match="no chromaprint"):
        ffmpeg.require_chromaprint()
