"""Same audio uploaded twice: an upload's fingerprint against the earlier tracks', and the configured policy.

The match and the insert of the upload's own fingerprint happen in one transaction under one advisory
lock, so of two copies of a recording ingested at once the second always sees the first. The lock is
held for an indexed lookup and a few in-memory comparisons, never across a network call.

Earlier tracks that failed, and uploads rejected as duplicates, are not matched against. The decision
is made once per track: a re-run of the transcode finds the row and keeps its verdict.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
from sqlalchemy import func, select, text

from models.music import TrackFingerprint
from roadie.db import transaction
from roadie.media import fingerprint

#: How many of the tracks sharing the most sub-fingerprints are compared in full.
CANDIDATES = 5

#: The tracks sharing a sub-fingerprint come from the GIN index first (materialised, so the planner cannot
#: turn it into a walk over every track), then are ranked by how many they share.
_CANDIDATES = text(
    """
    WITH sharing AS MATERIALIZED (
      SELECT track_id, fingerprint, hashes FROM track_fingerprints
      WHERE hashes && CAST(:hashes AS integer[]) AND track_id <> :track_id AND decision IS DISTINCT FROM 'reject'
    )
    SELECT f.track_id, f.fingerprint
    FROM sharing f JOIN tracks t ON t.id = f.track_id
    WHERE t.status <> 'failed'
    ORDER BY (SELECT count(*) FROM unnest(f.hashes) h WHERE h = ANY(CAST(:hashes AS integer[]))) DESC, t.created_at
    LIMIT :limit
    """
)


@dataclass(frozen=True)
class Verdict:
    """The earlier track an upload matched (if any), how closely, and what the policy decided."""

    track_id: uuid.UUID | None
    similarity: float | None
    decision: str | None

    def as_json(self) -> dict[str, Any] | None:
        if self.decision is None:
            return None
        return {
            "track_id": None if self.track_id is None else str(self.track_id),
            "similarity": self.similarity,
            "policy": self.decision,
        }


def _verdict(row: TrackFingerprint) -> Verdict:
    similarity = None if row.similarity is None else float(row.similarity)
    return Verdict(row.matched_track_id, similarity, row.decision)


def record(track_id: uuid.UUID, items: np.ndarray, *, policy: str, threshold: float) -> Verdict:
    """Store the track's fingerprint and decide, once, whether it repeats an earlier track's audio."""
    hashes = fingerprint.hashes(items)
    with transaction() as session:
        session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended("track_fingerprints", 0))))
        existing = session.get(TrackFingerprint, track_id)
        if existing is not None:
            return _verdict(existing)
        best: tuple[float, uuid.UUID] | None = None
        if hashes:
            params = {"hashes": hashes, "track_id": track_id, "limit": CANDIDATES}
            for other_id, data in session.execute(_CANDIDATES, params):
                similarity = fingerprint.compare(items, fingerprint.from_bytes(data)).similarity
                if best is None or similarity > best[0]:
                    best = (similarity, other_id)
        row = TrackFingerprint(track_id=track_id, fingerprint=fingerprint.to_bytes(items), hashes=hashes)
        if best is not None and best[0] >= threshold:
            row.matched_track_id, row.similarity, row.decision = best[1], Decimal(f"{best[0]:.3f}"), policy
        session.add(row)
        session.flush()
        return _verdict(row)


def verdict_of(session: Any, track_id: uuid.UUID) -> tuple[Verdict, Any] | None:
    """The track's recorded verdict and when it was made, if its fingerprint is recorded."""
    row = session.get(TrackFingerprint, track_id)
    return None if row is None else (_verdict(row), row.created_at)
