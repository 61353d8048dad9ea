"""What the audio fingerprint adds to a track's ingest CPU time.

    python -m bench.fingerprint [--minutes 3] [--rounds 3]

The source is a generated FLAC (44.1 kHz stereo, as ``bench.transcode``'s). Side by side, alternating:

- the MP3 320k + 128k ffmpeg of the transcode with the Chromaprint output (as Roadie runs it) and the
  same command without it: the difference is what fingerprinting costs, since it shares that decode;
- the match: ``fingerprint.compare`` against ``duplicates.CANDIDATES`` fingerprints as long as the
  track's (the most an upload is compared with in full);
- the ingest's media work as Roadie runs it: ``transcode.transcode`` (fingerprint included) and
  ``analysis.analyse``. Pinning and the metadata run on the IPFS node and are left out, which only
  makes the ratio larger.

CPU = user + system of this process and its ffmpeg children (getrusage), median of the rounds (the
fingerprint's: the median of each round's with-minus-without difference). Ratio = (fingerprint +
match) / (ingest media CPU - fingerprint - match): the share fingerprinting adds. The first round's
analysis pays librosa's JIT warm-up; the median leaves it out from 3 rounds on.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench.common import Row, print_table, run_main
from bench.transcode import cpu_seconds, run_roadie

TARGET = 0.10


def _cpu(work: Callable[[], object]) -> float:
    before = cpu_seconds()
    work()
    return cpu_seconds() - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from roadie.ingest import duplicates
    from roadie.media import analysis, ffmpeg, fingerprint, transcode
    from tests.fixtures.media import encode, song

    runs: dict[str, list[float]] = {"with": [], "without": [], "match": [], "ingest": []}
    with tempfile.TemporaryDirectory(prefix="bench-fingerprint-") as folder:
        work = Path(folder)
        source = encode(song(args.minutes * 60), work / "source.flac", rate=44100)
        probe = ffmpeg.probe(source)
        tools = ffmpeg.tools()
        print(f"source: {args.minutes:g} min FLAC, {source.stat().st_size / 1e6:.1f} MB; {args.rounds} rounds")

        def encode_mp3s(with_fingerprint: bool) -> None:
            fp_path = work / "fingerprint.raw" if with_fingerprint else None
            command, _ = transcode.encode_args(source, probe, work, transcode.ENCODE_GROUPS[0], fp_path)
            subprocess.run([tools.ffmpeg, *ffmpeg.QUIET, "-loglevel", "error", *command], check=True)

        def ingest_media() -> None:
            with tempfile.TemporaryDirectory(dir=work) as scratch:
                run_roadie(source, Path(scratch))
            analysis.analyse(source, sample_rate=probe.sample_rate, channels=probe.channels, window_s=120)

        for round_ in range(args.rounds):
            order = (True, False) if round_ % 2 == 0 else (False, True)
            for with_fingerprint in order:
                runs["with" if with_fingerprint else "without"].append(_cpu(partial(encode_mp3s, with_fingerprint)))
            items = fingerprint.read(work / "fingerprint.raw")
            others = [items[::-1].copy() for _ in range(duplicates.CANDIDATES)]  # as long, and unrelated
            runs["match"].append(_cpu(partial(lambda a, bs: [fingerprint.compare(a, b) for b in bs], items, others)))
            runs["ingest"].append(_cpu(ingest_media))
            print(
                f"  round {round_ + 1}: mp3s with fingerprint {runs['with'][-1]:.2f} s, without "
                f"{runs['without'][-1]:.2f} s, match {runs['match'][-1]:.3f} s, ingest {runs['ingest'][-1]:.2f} s",
                flush=True,
            )

    def median(key: str) -> float:
        return float(statistics.median(runs[key]))

    paired = statistics.median(w - wo for w, wo in zip(runs["with"], runs["without"], strict=True))
    added = max(0.0, paired) + median("match")
    ratio = added / (median("ingest") - added)
    print_table(
        f"Fingerprint, {args.minutes:g} min source (CPU seconds, median of {args.rounds})",
        [
            Row("MP3 encode ffmpeg: with fingerprint / without", median("with"), median("without"), 2),
            Row("ingest media work (transcode + analysis) / fingerprint + match", median("ingest"), added, 2),
        ],
    )
    print(f"fingerprint: {paired:.3f} s (median of the paired differences), match: {median('match'):.3f} s")
    print(f"fingerprinting adds {ratio:.1%} to the ingest's media CPU time (target < {TARGET:.0%})")
    return 0 if ratio < TARGET else 1


if __name__ == "__main__":
    run_main(main)
