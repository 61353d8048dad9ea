"""A subprocess that leads its own process group, so one signal reaches a Celery worker and its pool.

``roadie up``, the test fixtures and the benchmarks all start and stop platform processes with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass
class ProcessGroup:
    name: str
    command: list[str]
    log_path: Path
    env: dict[str, str] | None = None  # None: this process's environment
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = None

    def start(self, *, capture_stdout: bool = False) -> ProcessGroup:
        """Start with output appended to the log (stdout piped instead when ``capture_stdout``)."""
        self._log_file = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE if capture_stdout else self._log_file,
            stderr=self._log_file if capture_stdout else subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} is not running"
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the whole group."""
        if self.popen is not None:
            with suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def wait_stopped(self, timeout: float) -> None:
        """Wait for the leader, SIGKILL the group if it takes longer, and kill pool children left behind."""
        if self.popen is not None:
            try:
                self.popen.wait(timeout=max(timeout, 0.1))
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(timeout=10)
            self.signal(signal.SIGKILL)  # children may outlive a leader that exited on its own
            if self.popen.stdout is not None:
                self.popen.stdout.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.popen = None

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        self.signal(signal.SIGTERM)
        self.wait_stopped(timeout)

    def kill(self) -> None:
        """SIGKILL the group: no chance to clean up, as after an OOM kill."""
        self.signal(signal.SIGKILL)
        self.wait_stopped(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])
