"""Analysis with librosa on ffmpeg-decoded audio: tempo to 1 BPM, key, levels, waveform, silence."""

from __future__ import annotations

import numpy as np
import pytest

from roadie.media import analysis, ffmpeg
from tests.fixtures.media import AudioFiles


@pytest.mark.parametrize(
    ("name", "bpm", "key", "rate", "channels"),
    [
        ("click-120-c-major.flac", 120.0, "C major", 44100, 2),
        ("click-97-a-minor.wav", 97.0, "A minor", 48000, 1),
        ("click-128-c-major.mp3", 128.0, "C major", 44100, 2),
        ("click-140-a-minor.flac", 140.0, "A minor", 48000, 2),
        ("click-90.5-c-major.wav", 90.5, "C major", 44100, 1),
    ],
)
def test_tempo_within_one_bpm_and_key_on_generated_music(
    audio: AudioFiles, name: str, bpm: float, key: str, rate: int, channels: int
) -> None:
    path = audio.song(name, 30, bpm=bpm, key=key, rate=rate, channels=channels)
    probe = ffmpeg.probe(path)

    found = analysis.analyse(path, sample_rate=probe.sample_rate, channels=probe.channels, window_s=120)

    assert found.bpm == pytest.approx(bpm, abs=1.0)
    assert found.key == key
    assert found.key_confidence is not None
    assert found.key_confidence > 0.5
    assert (found.sample_rate, found.channels) == (rate, channels)
    assert found.duration_s == pytest.approx(30, abs=0.05)


def test_levels_and_the_waveform(audio: AudioFiles) -> None:
    found = analysis.analyse(audio.song("click-120-c-major.flac", 30), sample_rate=44100, channels=2, window_s=120)

    assert -30 < found.rms_dbfs < found.peak_rms_dbfs < 0
    assert len(found.waveform) == analysis.WAVEFORM_POINTS
    assert all(-1 <= low <= high <= 1 for low, high in found.waveform)
    assert max(high for _, high in found.waveform) > 0.5


def test_tempo_and_key_come_from_a_window_in_the_middle(audio: AudioFiles) -> None:
    found = analysis.analyse(audio.song("click-120-c-major.flac", 30), sample_rate=44100, channels=2, window_s=10)

    assert found.bpm == pytest.approx(120, abs=1.0)
    assert found.duration_s == pytest.approx(30, abs=0.05)  # the levels and waveform still cover it all


def test_silence_has_no_tempo_no_key_a_floor_level_and_a_flat_waveform(audio: AudioFiles) -> None:
    found = analysis.analyse(audio.silence(), sample_rate=44100, channels=2, window_s=120)

    assert (found.bpm, found.key, found.key_confidence) == (None, None, None)
    assert found.rms_dbfs == found.peak_rms_dbfs == analysis.SILENCE_DBFS
    assert found.waveform == [[0.0, 0.0]] * analysis.WAVEFORM_POINTS


@pytest.mark.parametrize("length", [0, 1, 999, 1000, 1001, 22050])
def test_the_waveform_has_a_thousand_pairs_whatever_the_length(length: int) -> None:
    samples = np.linspace(-1, 1, length, dtype=np.float32)

    peaks = analysis.waveform(samples)

    assert len(peaks) == analysis.WAVEFORM_POINTS
    if length:
        assert peaks[0][0] == samples[0]
        assert peaks[-1][1] == samples[-1]


def test_an_undecodable_file_fails_clearly(audio: AudioFiles) -> None:
    with pytest.raises(ffmpeg.UndecodableError):
        analysis.analyse(audio.corrupt_flac(), sample_rate=44100, channels=2, window_s=120)
