"""Pinning a track's files on IPFS and releasing them, recorded in ``track_files``.

A file's bytes come from the blob store. The heavy ``add`` runs outside any transaction; then, under a
transaction-scoped advisory lock on the CID, the pin is (re)asserted, verified with ``pin ls`` and the row
updated, and a release of the same CID takes the same lock, checks that no other pinned row shares it
and only then removes the pin. Two tracks with the same bytes share one CID and one pin; releasing one
leaves the other's content pinned. Every step is idempotent: the same bytes give the same CID, so a re-run
after a crash re-adds, finds the pin and updates the same row.
"""

from __future__ import annotations

import mimetypes
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models.music import TRACK_FILE_KINDS, Track, TrackFile
from roadie.blobs import blob_path, sha256_of
from roadie.db import transaction
from roadie.ipfs.client import IpfsNode, ipfs
from roadie.jobs.errors import PermanentError, TransientError

#: Kinds pinned by ``ipfs.pin_track``: all but the metadata JSON, which is built and pinned after them. The
#: source and the cover as uploaded are kept ``unpinned`` (a pin of one from before the cover stills is
#: still released with its track).
CONTENT_KINDS = tuple(kind for kind in TRACK_FILE_KINDS if kind != "metadata")
_UNPINNED_STATES = ("pending", "failed")


@dataclass(frozen=True)
class FileToPin:
    id: uuid.UUID
    kind: str
    storage_key: str | None
    sha256: str | None
    mime_type: str | None
    cid: str | None  # the CID it had before, if any


def lock_cid(session: Session, cid: str) -> None:
    """Serialise pin and release decisions about one CID until the transaction ends."""
    session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(cid, 0))))


def ensure_pinned(node: IpfsNode, cid: str) -> None:
    """Pin unless ``pin ls`` lists the CID already (re-pinning walks the whole DAG), then verify with ``pin ls``."""
    if node.is_pinned(cid):
        return
    node.pin(cid)
    if not node.is_pinned(cid):
        raise TransientError(f"pin ls does not list {cid} after pinning it", code="pin_not_verified")


def _mark_failed(file_id: uuid.UUID) -> None:
    with transaction() as session:
        session.execute(update(TrackFile).where(TrackFile.id == file_id).values(pin_state="failed"))


def pin_file(file: FileToPin) -> dict[str, Any]:
    """Add the file's blob to IPFS, pin it, verify the pin and record CID, size, MIME type and state."""
    path = blob_path(file.storage_key) if file.storage_key else None
    if path is None or not path.is_file():
        _mark_failed(file.id)
        raise PermanentError(
            f"the {file.kind} file is not in the blob store ({file.storage_key}); it cannot be pinned",
            code="blob_missing",
        )
    if file.sha256 is not None and sha256_of(path) != file.sha256:
        _mark_failed(file.id)
        raise PermanentError(
            f"the {file.kind} file in the blob store does not match its recorded SHA-256; it is not pinned",
            code="blob_corrupt",
        )
    node = ipfs()
    added = node.add_file(path)
    size = path.stat().st_size
    mime = file.mime_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    with transaction() as session:
        lock_cid(session, added.cid)
        ensure_pinned(node, added.cid)  # under the lock: a release of the same CID may have run since the add
        session.execute(
            update(TrackFile)
            .where(TrackFile.id == file.id)
            .values(cid=added.cid, pin_state="pinned", size_bytes=size, mime_type=mime)
        )
    if file.cid is not None and file.cid != added.cid:
        release(file.cid)  # the row's previous content, unless another row still pins it
    return {"kind": file.kind, "cid": added.cid, "size_bytes": size, "dag_size": added.dag_size, "mime_type": mime}


def release(cid: str) -> bool:
    """Remove the pin of ``cid`` unless a track file still pinned holds it; True when it was removed."""
    with transaction() as session:
        lock_cid(session, cid)
        return _release_locked(session, cid)


def _release_locked(session: Session, cid: str) -> bool:
    held = session.scalar(
        select(func.count()).select_from(TrackFile).where(TrackFile.cid == cid, TrackFile.pin_state == "pinned")
    )
    if held:
        return False
    ipfs().unpin(cid)
    return True


def _files(track_id: uuid.UUID, *, kinds: tuple[str, ...], states: tuple[str, ...]) -> list[FileToPin]:
    with transaction() as session:
        if session.get(Track, track_id) is None:
            raise PermanentError(f"track {track_id} does not exist", code="track_not_found")
        rows = session.scalars(
            select(TrackFile)
            .where(TrackFile.track_id == track_id, TrackFile.kind.in_(kinds), TrackFile.pin_state.in_(states))
            .order_by(TrackFile.kind)
        ).all()
        return [FileToPin(r.id, r.kind, r.storage_key, r.sha256, r.mime_type, r.cid) for r in rows]


def pin_track(track_id: uuid.UUID) -> dict[str, Any]:
    """Pin every file of the track that is not pinned yet (the metadata JSON excepted)."""
    newly = [pin_file(file) for file in _files(track_id, kinds=CONTENT_KINDS, states=_UNPINNED_STATES)]
    with transaction() as session:
        pinned = session.scalars(
            select(TrackFile)
            .where(TrackFile.track_id == track_id, TrackFile.kind.in_(CONTENT_KINDS), TrackFile.pin_state == "pinned")
            .order_by(TrackFile.kind)
        )
        files = [{"kind": f.kind, "cid": f.cid, "size_bytes": f.size_bytes, "mime_type": f.mime_type} for f in pinned]
    return {"track_id": str(track_id), "pinned_now": [f["kind"] for f in newly], "files": files}


def unpin_track(track_id: uuid.UUID) -> dict[str, Any]:
    """Release the content of a track being deleted: its pins go unless another track's files share them."""
    released: list[dict[str, str]] = []
    kept: list[dict[str, str]] = []
    for file in _files(track_id, kinds=(*CONTENT_KINDS, "metadata"), states=("pinned",)):
        assert file.cid is not None  # the pinned_has_cid constraint
        with transaction() as session:  # the row and the pin change together: a crash leaves both as they were
            lock_cid(session, file.cid)
            session.execute(update(TrackFile).where(TrackFile.id == file.id).values(pin_state="unpinned"))
            removed = _release_locked(session, file.cid)
        (released if removed else kept).append({"kind": file.kind, "cid": file.cid})
    return {"track_id": str(track_id), "released": released, "still_pinned_elsewhere": kept}
