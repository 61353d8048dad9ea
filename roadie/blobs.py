"""The blob store: a local directory holding uploads and renditions under content-derived keys.

Keys are relative POSIX paths such as ``tracks/<track id>/mp3_320.mp3``; this module is the only
place that turns a key into a filesystem path, so another store can replace it later.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from roadie.settings import get_settings


def blob_path(key: str) -> Path:
    """The file of a blob key under the configured blob directory; refuses keys that escape it."""
    parts = PurePosixPath(key).parts
    if not parts or PurePosixPath(key).is_absolute() or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"invalid blob key {key!r}")
    return get_settings().blob_dir.joinpath(*parts)
