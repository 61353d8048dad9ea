"""Roadie's audio analysis as a multiple of real time after warm-up, and its peak memory.

    python -m bench.analysis [--minutes 3,10] [--rounds 3]

For each length a FLAC is generated (44.1 kHz stereo, 120 BPM click track over a C major pad). Each
side runs in a fresh subprocess that first warms up on 5 s of audio (imports, numba's JIT), then
times its rounds:

- Roadie: ``roadie.media.analysis.analyse`` — ffmpeg decodes to 22,050 Hz mono float32, tempo and key
  on the middle ``ROADIE_ANALYSIS_WINDOW_S`` (120 s), RMS and the 1,000-pair waveform on everything;
- baseline: librosa on its own — ``librosa.load(sr=22050, mono=True)`` and the same steps (beat
  tracker tempo, chroma_stft key profile, RMS, waveform) on the whole track.

xRT = audio seconds per wall second (median). Peak RSS: the Python process (VmHWM) plus, for Roadie,
the decoding ffmpeg (sampled).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, Row, print_table, run_main
from bench.transcode import TreeMemory, own_peak_mb

RATE = 22_050


def roadie(path: Path) -> None:
    from roadie.media import analysis

    analysis.analyse(path, sample_rate=44100, channels=2, window_s=120)


def librosa_alone(path: Path) -> None:
    import librosa

    from roadie.media import analysis

    samples, _ = librosa.load(path, sr=RATE, mono=True)
    librosa.beat.beat_track(y=samples, sr=RATE, units="time")
    analysis.key(samples, RATE)
    analysis.rms_levels(samples)
    analysis.waveform(samples)


def child(side: str, source: Path, warmup: Path, rounds: int) -> None:
    work = roadie if side == "roadie" else librosa_alone
    work(warmup)
    memory = TreeMemory()
    memory.start()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work(source)
        times.append(time.perf_counter() - started)
    memory.done.set()
    memory.join()
    print(json.dumps({"seconds": statistics.median(times), "rss_mb": own_peak_mb() + memory.peak_children_mb}))


def _measure(side: str, source: Path, warmup: Path, rounds: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.analysis", "--child", side, "--source", str(source)]
    command += ["--warmup", str(warmup), "--rounds", str(rounds)]
    done = subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", default="3,10")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=["roadie", "librosa"], help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.source, args.warmup, args.rounds)
        return 0

    from tests.fixtures.media import encode, song

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-analysis-") as folder:
        warmup = encode(song(5.0), Path(folder) / "warmup.flac", rate=44100)
        for minutes in (float(m) for m in args.minutes.split(",")):
            source = encode(song(minutes * 60), Path(folder) / f"{minutes:g}min.flac", rate=44100)
            runs = {side: _measure(side, source, warmup, args.rounds) for side in ("roadie", "librosa")}
            mine, theirs = runs["roadie"], runs["librosa"]
            print(f"  {minutes:g} min: roadie {mine['seconds']:.2f} s, librosa {theirs['seconds']:.2f} s", flush=True)
            seconds = minutes * 60
            rows += [
                Row(f"{minutes:g} min: speed (x real time)", seconds / mine["seconds"], seconds / theirs["seconds"]),
                Row(f"{minutes:g} min: peak RSS (MB)", mine["rss_mb"], theirs["rss_mb"], 0),
            ]
    print_table("Analysis after warm-up (Roadie vs librosa.load + the same steps on the whole track)", rows)
    return 0


if __name__ == "__main__":
    run_main(main)
