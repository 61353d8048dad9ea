"""The blob store: a local directory holding uploads and renditions under content-derived keys.

Keys are relative POSIX paths such as ``tracks/<track id>/mp3_320.mp3``; this module is the only
place that turns a key into a filesystem path, so another store can replace it later.

Every write is atomic: bytes go to a temporary file under ``<blob dir>/.tmp`` (the same filesystem),
are fsynced, and are renamed onto their key, so a reader never sees half a file and a crash
leaves at most a stray temporary file, never a truncated blob.

A scratch directory (``work_dir``) holds an flock on its lock file for as long as its owner lives;
the kernel drops it when the owner dies, however it dies, so ``sweep_scratch`` removes exactly the
directories of dead owners, on this host or any other sharing the store.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType

from roadie.settings import get_settings

TMP_DIR = ".tmp"
#: In every scratch directory: locked by its owner for its lifetime.
LOCK_FILE = ".owner.lock"
HEAD_BYTES = 4096  # enough for every content sniffer


class BlobTooLargeError(Exception):
    """A streamed blob passed its size limit; nothing was kept."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class Blob:
    key: str
    size: int
    sha256: str


def blob_path(key: str) -> Path:
    """The file of a blob key under the configured blob directory; refuses keys that escape it."""
    parts = PurePosixPath(key).parts
    if not parts or PurePosixPath(key).is_absolute() or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"invalid blob key {key!r}")
    if parts[0] == TMP_DIR:
        raise ValueError(f"blob keys may not start with {TMP_DIR}")
    return get_settings().blob_dir.joinpath(*parts)


def _tmp_root() -> Path:
    root = get_settings().blob_dir / TMP_DIR
    root.mkdir(parents=True, exist_ok=True)
    return root


def _place(path: Path, key: str, *, synced: bool = False) -> Path:
    """fsync a finished file (unless it was) and rename it onto its key."""
    target = blob_path(key)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not synced:
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    path.replace(target)
    return target


class BlobWriter:
    """Streams bytes into a temporary blob, hashing and counting them; ``commit`` puts it under its key.

    Used as a context manager, an uncommitted blob is deleted when the block ends, also on error.
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.head = b""
        self._hash = hashlib.sha256()
        handle, name = tempfile.mkstemp(dir=_tmp_root(), prefix="upload-")
        self._file = os.fdopen(handle, "wb")
        self._path: Path | None = Path(name)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def write(self, data: bytes) -> None:
        """Append bytes; raises BlobTooLargeError (and discards the blob) past ``max_bytes``."""
        self.size += len(data)
        if self.max_bytes is not None and self.size > self.max_bytes:
            self.discard()
            raise BlobTooLargeError(self.max_bytes)
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        self._hash.update(data)
        self._file.write(data)

    @property
    def path(self) -> Path:
        """The temporary file, complete once the last write is flushed (see ``sync``)."""
        if self._path is None:
            raise ValueError("the blob was committed or discarded")
        return self._path

    def sync(self) -> None:
        """Flush and fsync what was written, so ``commit`` is only a rename."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def commit(self, key: str) -> Blob:
        """fsync and rename the blob onto ``key``; the writer is done afterwards."""
        self.sync()
        self._file.close()
        _place(self.path, key, synced=True)
        self._path = None
        return Blob(key, self.size, self.sha256)

    def discard(self) -> None:
        self._file.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.discard()


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def store_file(path: Path, key: str) -> Blob:
    """Move a finished file made in a ``work_dir`` onto ``key``, with its size and SHA-256."""
    digest, size = sha256_of(path), path.stat().st_size
    _place(path, key)
    return Blob(key, size, digest)


@contextmanager
def work_dir(prefix: str = "work-") -> Iterator[Path]:
    """A scratch directory on the blob store's filesystem (so results move in by rename), always removed.

    Its lock is held until the directory is gone, so a sweep never takes a directory still in use.
    """
    path, lock = _locked_scratch(prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(lock)


def _locked_scratch(prefix: str) -> tuple[Path, int]:
    """A new scratch directory and the descriptor of its locked lock file.

    A sweep can reach a directory before its owner has locked it; the owner then finds the
    directory gone (no lock file to open, or a lock file already unlinked) and makes another.
    """
    while True:
        path = Path(tempfile.mkdtemp(dir=_tmp_root(), prefix=prefix))
        try:
            lock = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            continue
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.fstat(lock).st_nlink > 0:
            return path, lock
        os.close(lock)


def sweep_scratch() -> list[str]:
    """Remove the scratch directories whose owner is gone (their lock is free); returns their names.

    The lock is held while the directory is removed, so its owner, had it just made it, makes another.
    """
    root = get_settings().blob_dir / TMP_DIR
    removed = []
    for path in sorted(root.iterdir()) if root.is_dir() else ():
        if path.is_symlink() or not path.is_dir():
            continue  # upload files of the API; a symlink is nothing a Roadie process made
        try:
            lock = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except FileNotFoundError:
            continue  # removed meanwhile by its owner
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            continue  # its owner is alive
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(lock)
        removed.append(path.name)
    return removed


def delete(key: str) -> None:
    blob_path(key).unlink(missing_ok=True)
