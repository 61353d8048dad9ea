"""Listening events: validated one by one, stored once per event id, rewarded later by the rewards run."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainValidator, ValidationError
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from api.errors import validation_fields
from models.ledger import Play
from roadie.settings import Settings

MAX_BATCH = 1000
#: A play longer than a day is not a listening event.
MAX_MS_LISTENED = 86_400_000


class PlayEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(
        min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$", description="The client's id of the event."
    )
    listener_id: uuid.UUID
    track_id: uuid.UUID
    started_at: AwareDatetime = Field(description="When the play started, with its UTC offset.")
    ms_listened: int = Field(ge=0, le=MAX_MS_LISTENED, description="Milliseconds actually listened.")
    client: str = Field(min_length=1, max_length=64, description="The app that played it, e.g. `ios/4.2.0`.")


class PlayBatch(BaseModel):
    """Up to 1,000 events; each is validated on its own so one bad event does not sink the others."""

    model_config = ConfigDict(extra="forbid")

    events: list[Annotated[Any, PlainValidator(lambda event: event, json_schema_input_type=PlayEvent)]] = Field(
        min_length=1, max_length=MAX_BATCH, description="PlayEvents, validated one by one by record_plays."
    )


@dataclass
class Receipt:
    accepted: int = 0
    duplicate: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicate": self.duplicate,
            "rejected": len(self.rejected),
            "errors": self.rejected,
        }


def record_plays(
    session: Session, events: list[Any], api_client_id: uuid.UUID | None, now: dt.datetime, settings: Settings
) -> Receipt:
    """Validate each event, drop repeats of an event id (in the batch or stored before), store the rest."""
    receipt = Receipt()
    valid: list[tuple[int, PlayEvent]] = []
    for index, raw in enumerate(events):
        try:
            valid.append((index, PlayEvent.model_validate(raw)))
        except ValidationError as exc:
            receipt.rejected.extend(
                {"index": index, "field": error["field"], "reason": error["reason"]}
                for error in validation_fields(exc, f"events.{index}")
            )
    tracks: dict[uuid.UUID, int | None] = dict(
        session.execute(
            text("SELECT id, duration_ms FROM tracks WHERE id = ANY(:ids)"),
            {"ids": list({event.track_id for _, event in valid})},
        ).all()
    )
    listeners = set(
        session.scalars(
            text("SELECT id FROM users WHERE id = ANY(:ids)"), {"ids": list({event.listener_id for _, event in valid})}
        )
    )
    rows: dict[str, dict[str, Any]] = {}
    for index, event in valid:
        problem = _problem(event, tracks, listeners, now, settings)
        if problem is not None:
            receipt.rejected.append({"index": index, "field": f"events.{index}.{problem[0]}", "reason": problem[1]})
        elif event.event_id in rows:
            receipt.duplicate += 1
        else:
            rows[event.event_id] = event.model_dump() | {"api_client_id": api_client_id, "received_at": now}
    if rows:
        stored = session.scalars(
            insert(Play)
            .values(list(rows.values()))
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(Play.id)
        ).all()
        receipt.accepted = len(stored)
        receipt.duplicate += len(rows) - len(stored)
    receipt.rejected.sort(key=lambda error: error["index"])
    return receipt


def _problem(
    event: PlayEvent,
    tracks: dict[uuid.UUID, int | None],
    listeners: set[uuid.UUID],
    now: dt.datetime,
    settings: Settings,
) -> tuple[str, str] | None:
    """The field at fault and why, for an event that is well-formed but cannot be true."""
    if event.started_at > now + dt.timedelta(seconds=settings.ledger_play_max_skew_s):
        return "started_at", "is in the future"
    if event.started_at < now - dt.timedelta(seconds=settings.ledger_play_max_age_s):
        return "started_at", f"is older than {settings.ledger_play_max_age_s} seconds"
    if event.listener_id not in listeners:
        return "listener_id", "unknown user"
    if event.track_id not in tracks:
        return "track_id", "unknown track"
    duration = tracks[event.track_id]
    if duration is not None and event.ms_listened > duration + settings.ledger_play_overrun_ms:
        return "ms_listened", f"is longer than the track ({duration} ms)"
    return None
