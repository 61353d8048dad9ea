"""What a console job page shows beyond the job's own row: its pipeline, its track, its attempts, its JSON.

Each part says what is known and no more: a job type without a pipeline has no diagram, a track that
was deleted or has no waveform yet is named as such, and JSON too large to read is cut on the server.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.console_pictures import waveform_points
from models.music import Track
from models.platform import Job, JobAttempt, JobStatus
from roadie.ingest.pipeline import Stage, stages_for

#: Job types drawn as a pipeline of child jobs, and the stages each one has for its payload.
PIPELINES = {"track.ingest": lambda payload: stages_for(bool(payload.get("mint")))}
RAW_JSON_CHARS = 20_000  # more than this is cut: the browser should not lay out a megabyte of text
INLINE_JSON_LINES, INLINE_JSON_CHARS = 12, 1_500  # longer JSON sits behind "show raw"


@dataclass(frozen=True)
class RawJson:
    text: str
    lines: int
    chars: int  # of the whole document, before any cut
    cut: bool

    @property
    def collapsed(self) -> bool:
        return self.lines > INLINE_JSON_LINES or self.chars > INLINE_JSON_CHARS


def raw_json(value: Any) -> RawJson | None:
    """Pretty JSON, cut to :data:`RAW_JSON_CHARS` characters; None for no value."""
    if value is None:
        return None
    whole = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    shown = whole[:RAW_JSON_CHARS]
    return RawJson(shown, shown.count("\n") + 1, len(whole), len(shown) < len(whole))


def _seconds(start: dt.datetime | None, end: dt.datetime | None, now: dt.datetime) -> float | None:
    if start is None:
        return None
    return max(((end or now) - start).total_seconds(), 0.0)


def _level(stage: Stage, stages: dict[str, Stage]) -> int:
    """The diagram column: one past the furthest stage this one waits for."""
    return 1 + max((_level(stages[name], stages) for name in stage.after if name in stages), default=-1)


def pipeline(job: Job, now: dt.datetime) -> list[list[dict[str, Any]]] | None:
    """The stages of a pipeline job in columns, each with its latest child's status, duration and id."""
    plan = PIPELINES.get(job.type)
    if plan is None:
        return None
    stages = {stage.name: stage for stage in plan(job.payload)}
    latest: dict[str, Job] = {child.type: child for child in job.children}  # oldest first: the last one stands
    recorded = {
        view.get("name"): view for view in (job.result or {}).get("stages", []) if isinstance(view, dict)
    }  # what the parent's last step wrote: a skipped stage has no child but a reason
    columns: list[list[dict[str, Any]]] = []
    for stage in stages.values():
        child = latest.get(stage.job_type)
        seen = recorded.get(stage.name, {})
        box: dict[str, Any] = {
            "name": stage.name,
            "job_type": stage.job_type,
            "after": stage.after,
            "status": child.status if child is not None else seen.get("status", "pending"),
            "reason": seen.get("reason"),
            "job_id": None,
            "seconds": None,
            "error_code": None,
        }
        if child is not None:
            box |= {
                "job_id": str(child.id),
                "progress": 100 if child.status == JobStatus.SUCCEEDED else child.progress_percent,
                "progress_stage": child.progress_stage,
                "seconds": _seconds(child.started_at, child.finished_at, now),
                "error_code": child.error_code if child.status != JobStatus.SUCCEEDED else None,
            }
        level = _level(stage, stages)
        columns.extend([] for _ in range(level + 1 - len(columns)))
        columns[level].append(box)
    return columns


def track_id_of(job: Job) -> uuid.UUID | None:
    """The track a job works on, when its payload names one."""
    try:
        return uuid.UUID(str(job.payload["track_id"]))
    except (KeyError, TypeError, ValueError):
        return None


async def track_panel(session: AsyncSession, track_id: uuid.UUID) -> dict[str, Any]:
    """The track's analysis and waveform picture; ``deleted`` when the row is gone."""
    track = await session.get(Track, track_id)
    if track is None:
        return {"id": str(track_id), "deleted": True}
    found = (track.waveform or {}).get("peaks")
    peaks: list[list[float]] = found if isinstance(found, list) else []
    drawable = bool(peaks) and all(isinstance(p, list) and len(p) == 2 for p in peaks)
    return {
        "id": str(track_id),
        "deleted": False,
        "title": track.title,
        "status": track.status,
        "waveform": waveform_points(peaks) if drawable else None,
        "points": len(peaks),
        "analysis": [
            ("Tempo", f"{track.bpm} BPM" if track.bpm is not None else None),
            ("Key", track.musical_key),
            ("Integrated loudness", f"{track.loudness_lufs} LUFS" if track.loudness_lufs is not None else None),
            ("True peak", f"{track.true_peak_dbtp} dBTP" if track.true_peak_dbtp is not None else None),
            ("Playback gain", f"{track.gain_db} dB" if track.gain_db is not None else None),
            ("Loudness range", f"{track.loudness_range_lu} LU" if track.loudness_range_lu is not None else None),
            ("Duration", f"{track.duration_ms / 1000:.1f} s" if track.duration_ms is not None else None),
            (
                "Format",
                f"{track.sample_rate} Hz, {track.channels} ch" if track.sample_rate and track.channels else None,
            ),
        ],
    }


def attempts_now(job: Job) -> tuple[JobAttempt | None, JobAttempt | None]:
    """The current (latest) attempt, and the latest earlier one that ended in an error."""
    rows = list(job.attempt_rows)
    current = rows[-1] if rows else None
    previous = next((a for a in reversed(rows[:-1]) if a.error_code), None)
    return current, previous
