"""The ``track.ingest`` pipeline: a parent job with one child job per stage (issue 3)."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from roadie.ingest import pipeline
from roadie.jobs.runtime import JobContext
from roadie.jobs.types import job_type


class TrackIngestPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    track_id: uuid.UUID
    mint: bool = Field(default=False, description="Mint the track's NFT to the artist's wallet at the end.")


@job_type(
    "track.ingest", TrackIngestPayload, queue="default", max_attempts=5, soft_time_limit_s=60, hard_time_limit_s=90
)
def ingest(payload: TrackIngestPayload, context: JobContext) -> dict[str, Any]:
    """Take an uploaded track through transcode, analysis, pinning, metadata and (when asked) the mint."""
    return pipeline.advance(context.job_id, context.lease_id, payload.track_id, payload.mint)
