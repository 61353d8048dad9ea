"""Ledger pool job types: reward accrual, staking payouts, royalty distribution (issue 5).

Beat does not do money work itself: each money schedule enqueues a ``ledger.catch_up`` job (through the
outbox, like any job), which runs every closed period not yet done. Duplicated beats or jobs are harmless:
each period is done once (see :mod:`roadie.ledger.periods`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from celery import shared_task
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select

from models.platform import Job, JobStatus
from roadie.chain.addresses import SolanaMint
from roadie.db import transaction
from roadie.jobs import creation
from roadie.jobs.errors import PermanentError
from roadie.jobs.runtime import JobContext
from roadie.jobs.types import job_type, job_types
from roadie.ledger import check, payouts, periods, staking
from roadie.settings import get_settings


class CatchUpPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["rewards", "royalties", "staking"] = Field(description="Which periodic money run.")


class NoPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenPositionPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: uuid.UUID
    mint_address: SolanaMint = Field(description="The staked token's mint.")
    amount: int = Field(gt=0, lt=10**38, description="Principal in base units.")
    rate_bps: int = Field(description="Yearly rate in basis points, 1 to ROADIE_LEDGER_STAKING_MAX_RATE_BPS.")
    rate_kind: Literal["apr", "apy"] = Field(
        description="apr: simple interest paid out each period; apy: true yield, interest re-staked each period."
    )
    lock_seconds: int = Field(ge=0, le=10 * 366 * 86_400, description="Unstaking earlier costs the penalty.")

    @field_validator("rate_bps")
    @classmethod
    def _rate_in_range(cls, value: int) -> int:
        maximum = get_settings().ledger_staking_max_rate_bps
        if not 0 < value <= maximum:
            raise ValueError(f"must be between 1 and {maximum}")
        return value


class UnstakePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    position_id: uuid.UUID


@job_type(
    "ledger.catch_up", CatchUpPayload, queue="ledger", max_attempts=5, soft_time_limit_s=3000, hard_time_limit_s=3300
)
def catch_up(payload: CatchUpPayload, context: JobContext) -> dict[str, Any]:
    """Run every closed period of one money schedule not yet done, oldest first."""
    done = periods.catch_up(payload.kind)
    return {"kind": payload.kind, "periods": done}


@job_type("ledger.check", NoPayload, queue="ledger", max_attempts=3, soft_time_limit_s=3000, hard_time_limit_s=3300)
def check_books(payload: NoPayload, context: JobContext) -> dict[str, Any]:
    """Verify the ledger's invariants; fails with ledger_invariant_violated when one is broken."""
    with transaction() as session:
        found = check.violations(session, get_settings())
    if found:
        summary = "; ".join(f"{v.check} {v.subject}: {v.value}" for v in found[:20])
        raise PermanentError(f"{len(found)} violation(s): {summary}", code="ledger_invariant_violated")
    return check.report(found)


@job_type("ledger.follow_payouts", NoPayload, queue="ledger", max_attempts=5)
def follow_payouts(payload: NoPayload, context: JobContext) -> dict[str, Any]:
    """Let payouts follow their chain batches' statuses; settle the finalized ones."""
    with transaction() as session:
        return payouts.follow_chain(session)


@job_type("staking.open", OpenPositionPayload, queue="ledger", max_attempts=5)
def open_position(payload: OpenPositionPayload, context: JobContext) -> dict[str, Any]:
    """Record a stake deposited on chain as a position and its ledger entries."""
    with transaction() as session:
        position = staking.open_position(
            session,
            payload.user_id,
            payload.mint_address,
            payload.amount,
            payload.rate_bps,
            payload.rate_kind,
            payload.lock_seconds,
            dt.datetime.now(dt.UTC),
            get_settings(),
        )
        return {"position_id": str(position.id), "started_at": position.started_at.isoformat()}


@job_type("staking.unstake", UnstakePayload, queue="ledger", max_attempts=5)
def unstake(payload: UnstakePayload, context: JobContext) -> dict[str, Any]:
    """Pay the position's interest up to now and release its principal (less any early-unstake penalty)."""
    with transaction() as session:
        return staking.unstake(session, payload.position_id, dt.datetime.now(dt.UTC), get_settings())


def enqueue(type_name: str, payload: dict[str, Any]) -> uuid.UUID | None:
    """Queue a job for beat unless the same one is still waiting or running; None when it is."""
    unfinished = [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING]
    with transaction() as session:
        waiting = session.scalar(
            select(Job.id).where(Job.type == type_name, Job.payload == payload, Job.status.in_(unfinished)).limit(1)
        )
        if waiting is not None:
            return None
        return creation.enqueue(session, job_types()[type_name], payload, actor="beat").id


def _from_beat(type_name: str, payload: dict[str, Any]) -> str | None:
    job_id = enqueue(type_name, payload)
    return None if job_id is None else str(job_id)


@shared_task(name="ledger.beat_rewards", ignore_result=True)
def beat_rewards() -> str | None:
    """Beat: accrue and pay out the listening rewards of the closed periods."""
    return _from_beat("ledger.catch_up", {"kind": "rewards"})


@shared_task(name="ledger.beat_royalties", ignore_result=True)
def beat_royalties() -> str | None:
    """Beat: distribute and pay out the royalties of the closed periods."""
    return _from_beat("ledger.catch_up", {"kind": "royalties"})


@shared_task(name="ledger.beat_staking", ignore_result=True)
def beat_staking() -> str | None:
    """Beat: pay the staking interest of the closed periods."""
    return _from_beat("ledger.catch_up", {"kind": "staking"})


@shared_task(name="ledger.beat_payout_status", ignore_result=True)
def beat_payout_status() -> str | None:
    """Beat: let payouts follow their chain batches."""
    return _from_beat("ledger.follow_payouts", {})


@shared_task(name="ledger.beat_check", ignore_result=True)
def beat_check() -> str | None:
    """Beat: check the ledger's invariants."""
    return _from_beat("ledger.check", {})
