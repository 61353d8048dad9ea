"""Periodic money runs: each period of each kind is done once, in order, whoever triggers it and however often.

A run takes a Postgres advisory lock for its kind, finds the next period after the last one done, and does
the period's work and writes its ``ledger_runs`` row (UNIQUE(kind, period_start)) in one transaction. Two
beats, a redelivered task or a crash in the middle therefore pay once; after an outage the missed periods
are run one after another, each under its own key.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.ledger import LedgerRun
from roadie.db import advisory_lock_key, transaction
from roadie.ledger import payouts, rewards, royalties, staking
from roadie.ledger.books import period_floor, refusal
from roadie.settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunKind:
    name: str
    period_s: Callable[[Settings], int]
    #: The earliest moment with work not yet done, when no period has been run yet.
    first_pending: Callable[[Session], dt.datetime | None]
    work: Callable[[Session, LedgerRun, Settings], dict[str, Any]]


KINDS = {
    kind.name: kind
    for kind in (
        RunKind("rewards", lambda s: s.ledger_reward_period_s, rewards.first_pending, rewards.accrue),
        RunKind("royalties", lambda s: s.ledger_royalty_period_s, royalties.first_pending, royalties.distribute),
        RunKind("staking", lambda s: s.ledger_staking_period_s, staking.first_pending, staking.pay_period),
    )
}


def run_next_period(kind: str, now: dt.datetime, settings: Settings) -> dict[str, Any] | None:
    """Run the kind's next closed period in one transaction; None when there is none."""
    spec = KINDS[kind]
    length = spec.period_s(settings)
    try:
        with transaction() as session:
            session.execute(select(func.pg_advisory_xact_lock(advisory_lock_key("roadie.ledger.run", kind))))
            # JIT compiling the period's few big statements cost about 2 s per run in bench/accrual.py, for no gain.
            session.execute(text("SET LOCAL jit = off"))
            last_end = session.scalar(select(func.max(LedgerRun.period_end)).where(LedgerRun.kind == kind))
            start = last_end if last_end is not None else _first_start(session, spec, length)
            if start is None or start + dt.timedelta(seconds=length) > now:
                return None
            end = start + dt.timedelta(seconds=length)
            run_id = session.execute(
                insert(LedgerRun)
                .values(kind=kind, period_start=start, period_end=end, result={})
                .on_conflict_do_nothing(index_elements=["kind", "period_start"])
                .returning(LedgerRun.id)
            ).scalar_one_or_none()
            if run_id is None:  # written without the lock: someone else did this period
                return None
            run = session.get_one(LedgerRun, run_id)
            result = spec.work(session, run, settings) | payouts.create(session, run, settings)
            run.result = result
            log.info("ledger.period_done", extra={"kind": kind, "period_start": start.isoformat(), **result})
            return {"period_start": start.isoformat(), **result}
    except IntegrityError as exc:
        raise refusal(exc) from exc


def _first_start(session: Session, spec: RunKind, length: int) -> dt.datetime | None:
    pending = spec.first_pending(session)
    return None if pending is None else period_floor(pending, length)


def catch_up(kind: str, now: dt.datetime | None = None, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Run every closed period of ``kind`` not yet done, oldest first (at most ``ledger_max_catchup_periods``)."""
    settings = settings or get_settings()
    done = []
    for _ in range(settings.ledger_max_catchup_periods):
        result = run_next_period(kind, now or dt.datetime.now(dt.UTC), settings)
        if result is None:
            break
        done.append(result)
    return done
