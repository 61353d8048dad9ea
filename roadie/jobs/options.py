"""How a client asks a job to run: when (``run_at`` or ``delay_s``) and how urgently (``priority``).

A delayed job is inserted ``scheduled`` with its outbox row's ``available_at`` at its due time, so
the relay publishes it then (at most a relay poll late) and a broker flush or a restart before then
loses nothing: until it is due, the job is only in the ledger.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import AwareDatetime, BaseModel, Field, ValidationInfo, field_validator

from models.platform import PRIORITY_MAX, PRIORITY_MIN
from roadie.settings import get_settings

#: The schema's bound on delay_s (ten years); the configured horizon is usually much nearer.
MAX_DELAY_S = 10 * 366 * 86_400


def _horizon() -> dt.timedelta:
    return dt.timedelta(days=get_settings().job_delay_horizon_days)


class RunOptions(BaseModel):
    """When a job runs: not before ``run_at``, or ``delay_s`` after it is accepted; with neither, at once.
    And its ``priority``: among the jobs waiting on its queue, a higher one is handed to a worker first."""

    run_at: AwareDatetime | None = Field(
        default=None,
        description="RFC 3339 with an offset. In the past: at once. At most ROADIE_JOB_DELAY_HORIZON_DAYS ahead.",
    )
    delay_s: float | None = Field(
        default=None,
        ge=0,
        le=MAX_DELAY_S,
        allow_inf_nan=False,
        description="Seconds from acceptance; not with run_at. At most ROADIE_JOB_DELAY_HORIZON_DAYS.",
    )

    priority: int | None = Field(
        default=None,
        ge=PRIORITY_MIN,
        le=PRIORITY_MAX,
        description="0 (lowest) to 9 (highest); default: the job type's, 5 for most.",
    )

    @field_validator("run_at")
    @classmethod
    def _run_at_within_horizon(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value > dt.datetime.now(dt.UTC) + _horizon():
            raise ValueError(f"more than {get_settings().job_delay_horizon_days} days ahead")
        return value

    @field_validator("delay_s")
    @classmethod
    def _delay_within_horizon(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("run_at") is not None:
            raise ValueError("give run_at or delay_s, not both")
        if value is not None and dt.timedelta(seconds=value) > _horizon():
            raise ValueError(f"more than {get_settings().job_delay_horizon_days} days")
        return value

    def due_at(self, now: dt.datetime) -> dt.datetime | None:
        """When the job becomes due, or None when that is now (no delay, or a ``run_at`` already passed)."""
        if self.run_at is not None:
            due = self.run_at
        elif self.delay_s:
            due = now + dt.timedelta(seconds=self.delay_s)
        else:
            return None
        return due if due > now else None

    def identity(self) -> dict[str, Any]:
        """What the request asked for, as given, for its Idempotency-Key fingerprint (a retry of
        ``delay_s: 60`` is the same request, though its due time would differ)."""
        return self.model_dump(mode="json", include={"run_at", "delay_s", "priority"}, exclude_none=True)
