"""ffmpeg and ffprobe as subprocesses: found once, probed as JSON, run with progress and always reaped.

Full-length work runs in ffmpeg processes (constant memory, decoding streamed); Python only reads
their progress lines. A process is killed when its job is cancelled, times out or fails.

Each ffmpeg and ffprobe leads its own process group (a stop kills the whole group) and is tied to
the worker that started it: on Linux the kernel SIGKILLs it when its parent dies (PR_SET_PDEATHSIG),
so a worker child that is SIGKILLed or OOM-killed leaves no ffmpeg running. The kernel's "parent"
is the thread that started the process, so every process is started and waited for by one thread
that outlives it (``Run``; ``Runs.run`` keeps both in one thread).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import IO, Any

from roadie.jobs.errors import PermanentError
from roadie.settings import get_settings

#: ffmpeg's own chatter is off; errors still reach stderr, which we keep for the error message.
QUIET = ("-hide_banner", "-nostdin", "-nostats", "-y")
#: Same input, same bytes: no random Ogg serials, no version strings (so CIDs repeat).
BITEXACT = ("-fflags", "+bitexact", "-flags:a", "+bitexact")
STDERR_TAIL = 2000


class ToolMissingError(PermanentError):
    """ffmpeg or ffprobe is not installed where the settings say."""

    code = "ffmpeg_missing"


class UndecodableError(PermanentError):
    """The file is not audio ffmpeg can decode to the end."""

    code = "undecodable_audio"


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with(parent_pid: int) -> None:
    """In the forked child, before exec: be SIGKILLed when the parent dies, also if it died already."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


def _spawn_options() -> dict[str, Any]:
    """Popen options for a tool process: its own process group, and death with its parent."""
    return {"process_group": 0, "preexec_fn": partial(_die_with, os.getpid())}


@dataclass(frozen=True)
class Tools:
    ffmpeg: str
    ffprobe: str


@lru_cache(maxsize=1)
def tools() -> Tools:
    """The absolute paths of ffmpeg and ffprobe, or a clear error naming the setting to fix."""
    settings = get_settings()
    found = {
        name: shutil.which(command)
        for name, command in (("ffmpeg", settings.ffmpeg_path), ("ffprobe", settings.ffprobe_path))
    }
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise ToolMissingError(
            f"{' and '.join(missing)} not found (ROADIE_FFMPEG_PATH={settings.ffmpeg_path!r}, "
            f"ROADIE_FFPROBE_PATH={settings.ffprobe_path!r}); install Debian's ffmpeg package"
        )
    return Tools(ffmpeg=str(found["ffmpeg"]), ffprobe=str(found["ffprobe"]))


def require_chromaprint() -> None:
    """ffmpeg must have the ``chromaprint`` muxer (the transcode fingerprints with it); else a clear error."""
    done = subprocess.run([tools().ffmpeg, *QUIET, "-muxers"], capture_output=True, timeout=30, check=False)
    if not any(line.split()[1:2] == ["chromaprint"] for line in done.stdout.decode(errors="replace").splitlines()):
        raise ToolMissingError(
            f"{tools().ffmpeg} has no chromaprint muxer (audio fingerprints); install Debian's ffmpeg, "
            "which is built with libchromaprint"
        )


@dataclass(frozen=True)
class Probe:
    """What the container says about the first audio stream (durations may be estimates)."""

    codec: str
    sample_rate: int
    channels: int
    duration_s: float | None


def probe(path: Path) -> Probe:
    """ffprobe the first audio stream; UndecodableError when there is none or ffprobe cannot read the file."""
    command = [tools().ffprobe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)]
    done = subprocess.run(command, capture_output=True, timeout=60, check=False, **_spawn_options())
    if done.returncode != 0:
        raise UndecodableError(f"not a readable audio file: {_tail(done.stderr) or 'ffprobe failed'}")
    info: dict[str, Any] = json.loads(done.stdout or b"{}")
    audio = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
    if not audio:
        raise UndecodableError("the file has no audio stream")
    stream, container = audio[0], info.get("format", {})
    duration = stream.get("duration") or container.get("duration")
    return Probe(
        codec=str(stream.get("codec_name", "")),
        sample_rate=int(stream.get("sample_rate") or 0),
        channels=int(stream.get("channels") or 0),
        duration_s=float(duration) if duration not in (None, "N/A") else None,
    )


def _tail(stderr: bytes, lines: int = 4) -> str:
    """ffmpeg's last words, on one line: enough to say what was wrong with the file."""
    last = stderr.decode(errors="replace").strip().splitlines()[-lines:]
    return " | ".join(line.strip() for line in last)[-STDERR_TAIL:]


ProgressCallback = Callable[[float], None]


class Run:
    """One ffmpeg process reporting progress on stdout (``-progress pipe:1``); killed unless it ends."""

    def __init__(self, args: Sequence[str], *, stdout_data: bool = False, loglevel: str = "error") -> None:
        progress = () if stdout_data else ("-progress", "pipe:1")
        self.command = [tools().ffmpeg, *QUIET, "-loglevel", loglevel, *progress, *args]
        # stderr goes to a file: a pipe nobody reads while we read stdout could fill and stall ffmpeg.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=self._stderr, **_spawn_options())
        self.out_time_s = 0.0

    @property
    def stdout(self) -> IO[bytes]:
        assert self.process.stdout is not None
        return self.process.stdout

    def follow(self, on_progress: ProgressCallback | None = None) -> None:
        """Read progress lines until ffmpeg ends; ``out_time_s`` is then the length it wrote."""
        for line in self.stdout:
            key, _, value = line.decode(errors="replace").strip().partition("=")
            if key == "out_time_us" and value.lstrip("-").isdigit():
                self.out_time_s = max(self.out_time_s, int(value) / 1e6)
                if on_progress is not None:
                    on_progress(self.out_time_s)

    def finish(self, what: str, error: type[PermanentError] = UndecodableError) -> str:
        """Wait for the exit; ``error`` with ffmpeg's own words when it failed. Returns stderr."""
        self.process.wait()
        self._stderr.seek(0)
        stderr = self._stderr.read()
        if self.process.returncode != 0:
            raise error(f"{what} failed: {_tail(stderr) or f'ffmpeg exited {self.process.returncode}'}")
        return stderr.decode(errors="replace")

    def stop(self) -> None:
        """Kill ffmpeg's process group unless it has ended, and reap it; a reader of its stdout then sees the end."""
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self.stdout.close()
        self._stderr.close()


class Runs:
    """The ffmpeg processes of one piece of work, started from any thread and stopped together.

    Once stopped, nothing new starts: a thread about to start ffmpeg for a failed job raises instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: list[Run] = []
        self._stopped = False

    def start(self, args: Sequence[str], *, stdout_data: bool = False, loglevel: str = "error") -> Run:
        with self._lock:
            if self._stopped:
                raise RuntimeError("this work was stopped")
            process = Run(args, stdout_data=stdout_data, loglevel=loglevel)
            self._started.append(process)
            return process

    def run(
        self,
        args: Sequence[str],
        what: str,
        on_progress: ProgressCallback | None = None,
        *,
        loglevel: str = "error",
        error: type[PermanentError] = UndecodableError,
    ) -> tuple[float, str]:
        """Run ffmpeg to the end; returns the written length in seconds and its stderr."""
        with self.start(args, loglevel=loglevel) as process:
            process.follow(on_progress)
            return process.out_time_s, process.finish(what, error)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for process in self._started:
                process.stop()


class BadOutputError(PermanentError):
    """A rendition does not decode back to the source's length."""

    code = "output_invalid"


def decoded_seconds(path: Path, runs: Runs) -> float:
    """Decode a whole file and return its length: the check that an output plays to the end."""
    args = ["-xerror", "-i", str(path), "-map", "0:a:0", "-f", "null", "-"]
    seconds, _ = runs.run(args, f"decoding {path.name} back", error=BadOutputError)
    return seconds
