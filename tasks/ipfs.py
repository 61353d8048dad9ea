"""IPFS pool job types: pinning and unpinning track content and NFT metadata (issue 3).

Thin wrappers: the work is in :mod:`roadie.ipfs.pinning` and :mod:`roadie.ipfs.metadata`. Each job is
idempotent, so a re-run after success or a crash changes nothing and adds no rows.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from roadie.ipfs import metadata, pinning
from roadie.jobs.runtime import JobContext
from roadie.jobs.types import job_type


class IpfsPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    track_id: uuid.UUID = Field(description="The track whose files the job handles.")


@job_type("ipfs.pin_track", IpfsPayload, queue="ipfs", max_attempts=5, soft_time_limit_s=600, hard_time_limit_s=660)
def pin_track(payload: IpfsPayload, context: JobContext) -> dict[str, Any]:
    """Add and pin every not-yet-pinned file of a track (the metadata JSON excepted) and record the CIDs."""
    return pinning.pin_track(payload.track_id)


@job_type("ipfs.pin_metadata", IpfsPayload, queue="ipfs", max_attempts=5)
def pin_metadata(payload: IpfsPayload, context: JobContext) -> dict[str, Any]:
    """Build the track's NFT metadata JSON, validate it against the schema, store and pin it."""
    return metadata.pin_metadata(payload.track_id)


@job_type("ipfs.unpin", IpfsPayload, queue="ipfs", max_attempts=5)
def unpin_track(payload: IpfsPayload, context: JobContext) -> dict[str, Any]:
    """Release a deleted track's content: unpin its files unless another track's files share the CIDs."""
    return pinning.unpin_track(payload.track_id)
