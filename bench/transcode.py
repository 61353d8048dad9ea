"""Roadie's transcode as a multiple of real time, against calling ffmpeg directly for the same outputs.

    python -m bench.transcode [--minutes 3] [--rounds 3]

The source is a generated FLAC (44.1 kHz stereo: a 120 BPM click track over a chord pad). Each side
runs in a fresh subprocess, alternating, so neither inherits the other's memory or page cache luck:

- Roadie: ``roadie.media.transcode.transcode`` — MP3 320k + 128k + Opus 96k from one ffmpeg process,
  EBU R128 loudness (true peak) measured beside it, the 30-s preview faded by ``afade`` in its
  cutting process, and every output decoded back and checked against the source length (the
  preview into pydub, which also checks its fades);
- baseline: the same four outputs as four ``ffmpeg`` commands run one after another (the preview
  with ``-ss``/``-t`` input seeking and ``afade``), no loudness, no verification.

xRT = audio seconds per wall second (median of the rounds). CPU time: user + system of the Python
process and every ffmpeg (on a busy machine, wall time follows it). Peak RSS: the Python process
and the ffmpeg children running at once (sampled every 10 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import ROOT, Row, print_table, run_main

FFMPEG = ("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y")
PREVIEW_FADES = "afade=t=in:d=0.5,afade=t=out:st=28.5:d=1.5"


class TreeMemory(threading.Thread):
    """Samples the RSS of this process's ffmpeg children every 10 ms; keeps the largest sum seen.

    (getrusage's figures would not do: Linux carries a process's peak across fork and exec.)
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_children_mb = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self.done.wait(0.01):
            total = 0
            for process in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += process.memory_info().rss
            self.peak_children_mb = max(self.peak_children_mb, total / 2**20)


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def own_peak_mb() -> float:
    """This process's peak RSS since its exec (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_roadie(source: Path, work: Path) -> float:
    from roadie.media import ffmpeg, transcode

    started = time.perf_counter()
    transcode.transcode(
        source,
        ffmpeg.probe(source),
        work,
        preview_start_s=None,
        preview_length_s=30,
        max_duration_s=7200,
        target_lufs=-14,
        ceiling_dbtp=-1,
        on_progress=lambda percent, stage: None,
    )
    return time.perf_counter() - started


def run_ffmpeg(source: Path, work: Path, duration: float) -> float:
    start = duration / 3
    preview = ["-ss", f"{start:.3f}", "-t", "30", "-i", str(source), "-af", PREVIEW_FADES]
    commands = [
        [*FFMPEG, "-i", str(source), "-c:a", "libmp3lame", "-b:a", "320k", str(work / "a320.mp3")],
        [*FFMPEG, "-i", str(source), "-c:a", "libmp3lame", "-b:a", "128k", str(work / "a128.mp3")],
        [*FFMPEG, "-i", str(source), "-c:a", "libopus", "-b:a", "96k", str(work / "a96.opus")],
        [*FFMPEG, *preview, "-c:a", "libmp3lame", "-b:a", "128k", str(work / "preview.mp3")],
    ]
    started = time.perf_counter()
    for command in commands:
        subprocess.run(command, check=True)
    return time.perf_counter() - started


def child(side: str, source: Path, duration: float) -> None:
    """One measured run in this fresh process; prints its figures as JSON."""
    if side == "roadie":
        import roadie.media.transcode  # noqa: F401 - imports are not part of a transcode's cost
    memory = TreeMemory()
    memory.start()
    cpu_before = cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="bench-transcode-") as work:
        seconds = run_roadie(source, Path(work)) if side == "roadie" else run_ffmpeg(source, Path(work), duration)
    cpu = cpu_seconds() - cpu_before
    memory.done.set()
    memory.join()
    figures = {"seconds": seconds, "cpu_s": cpu, "rss_mb": own_peak_mb(), "child_rss_mb": memory.peak_children_mb}
    print(json.dumps(figures))


def _measure(side: str, source: Path, duration: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.transcode", "--child", side, "--source", str(source)]
    done = subprocess.run([*command, "--duration", str(duration)], check=True, capture_output=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=["roadie", "ffmpeg"], help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.source, args.duration)
        return 0

    from tests.fixtures.media import encode, song

    duration = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="bench-source-") as folder:
        source = encode(song(duration), Path(folder) / "source.flac", rate=44100)
        print(f"source: {args.minutes:g} min FLAC, {source.stat().st_size / 1e6:.1f} MB; {args.rounds} rounds")
        runs: dict[str, list[dict[str, Any]]] = {"roadie": [], "ffmpeg": []}
        for round_ in range(args.rounds):
            for side in ("roadie", "ffmpeg") if round_ % 2 == 0 else ("ffmpeg", "roadie"):
                runs[side].append(_measure(side, source, duration))
                print(f"  round {round_ + 1} {side}: {runs[side][-1]['seconds']:.2f} s", flush=True)

    def median(side: str, key: str) -> float:
        return float(statistics.median(run[key] for run in runs[side]))

    print_table(
        f"Transcode, {args.minutes:g} min source (MP3 320k + 128k, Opus 96k, 30-s preview)",
        [
            Row("speed (x real time)", duration / median("roadie", "seconds"), duration / median("ffmpeg", "seconds")),
            Row("wall time (s)", median("roadie", "seconds"), median("ffmpeg", "seconds"), 2),
            Row("CPU time, all processes (s)", median("roadie", "cpu_s"), median("ffmpeg", "cpu_s"), 2),
            Row("peak RSS, Python process (MB)", median("roadie", "rss_mb"), median("ffmpeg", "rss_mb"), 0),
            Row(
                "peak RSS, ffmpeg children together (MB)",
                median("roadie", "child_rss_mb"),
                median("ffmpeg", "child_rss_mb"),
                0,
            ),
        ],
    )
    print("target: roadie/baseline speed >= 0.90 (Roadie also measures loudness and decodes every output back)")
    return 0


if __name__ == "__main__":
    run_main(main)
