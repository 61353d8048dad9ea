"""Accounts and transactions of the double-entry ledger.

Entries are written by set-based SQL; this module holds what every writer shares: finding or creating
accounts, opening a transaction under its unique key, and telling the database's refusals apart.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.ledger import LedgerAccount, LedgerRun, LedgerTransaction
from roadie.jobs.errors import PermanentError

#: How a period is named in keys: ``rewards:2026-11-22T10:00Z`` (the payout contract's batch key format).
KEY_TIME_FORMAT = "%Y-%m-%dT%H:%MZ"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def period_floor(moment: dt.datetime, length_s: int) -> dt.datetime:
    """The start of the period holding ``moment``: periods tile time from the Unix epoch, in UTC."""
    elapsed = int((moment - EPOCH).total_seconds())
    return EPOCH + dt.timedelta(seconds=elapsed - elapsed % length_s)


def period_key(kind: str, period_start: dt.datetime) -> str:
    return f"{kind}:{period_start.astimezone(dt.UTC).strftime(KEY_TIME_FORMAT)}"


def system_account(session: Session, kind: str) -> int:
    """The id of the treasury, clearing or external account, created on first use."""
    session.execute(
        insert(LedgerAccount)
        .values(kind=kind, user_id=None)
        .on_conflict_do_nothing(constraint="uq_ledger_accounts_kind")
    )
    return int(
        session.execute(
            text("SELECT id FROM ledger_accounts WHERE kind = :kind AND user_id IS NULL"), {"kind": kind}
        ).scalar_one()
    )


def user_accounts(session: Session, kind: str, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
    """The ids of these users' accounts of one kind, created where missing."""
    users = sorted(set(user_ids))
    if not users:
        return {}
    session.execute(
        insert(LedgerAccount)
        .values([{"kind": kind, "user_id": user} for user in users])
        .on_conflict_do_nothing(constraint="uq_ledger_accounts_kind")
    )
    rows = session.execute(
        text("SELECT user_id, id FROM ledger_accounts WHERE kind = :kind AND user_id = ANY(:users)"),
        {"kind": kind, "users": users},
    )
    return {user: int(account) for user, account in rows}


def open_transaction(
    session: Session,
    key: str,
    kind: str,
    effective_at: dt.datetime,
    *,
    run_id: int | None = None,
    memo: dict[str, Any] | None = None,
) -> int | None:
    """Insert the transaction row under its unique key; None when a transaction with that key exists."""
    created = session.execute(
        insert(LedgerTransaction)
        .values(key=key, kind=kind, run_id=run_id, effective_at=effective_at, memo=memo)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(LedgerTransaction.id)
    ).scalar_one_or_none()
    return None if created is None else int(created)


def post(session: Session, transaction_id: int, legs: dict[int, int]) -> None:
    """Write the legs (account id -> signed amount) of one transaction in one statement; they must sum to 0."""
    legs = {account: amount for account, amount in legs.items() if amount}
    if not legs:
        return
    session.execute(
        text(
            "INSERT INTO ledger_entries (transaction_id, account_id, amount) "
            "SELECT :tx, account_id, amount FROM unnest(CAST(:accounts AS bigint[]), CAST(:amounts AS numeric[])) "
            "AS legs(account_id, amount)"
        ),
        {"tx": transaction_id, "accounts": list(legs), "amounts": list(legs.values())},
    )


CREDIT_USERS = """
WITH credited AS (
    SELECT a.id AS account_id, t.amount
    FROM {table} AS t JOIN ledger_accounts AS a ON a.kind = :kind AND a.user_id = t.user_id
    WHERE t.amount > 0
)
INSERT INTO ledger_entries (transaction_id, account_id, amount)
SELECT :tx, account_id, amount FROM credited
UNION ALL
SELECT :tx, :source, -sum(amount) FROM credited HAVING sum(amount) > 0
"""


def credit_users(session: Session, run: LedgerRun, table: str, source: str) -> None:
    """Credit each ``(user_id, amount)`` row of the temp table ``table`` to the users' accounts of the run's
    kind, from the ``source`` system account, as the run's one transaction (accounts made where missing)."""
    session.execute(
        text(
            f"INSERT INTO ledger_accounts (kind, user_id) SELECT :kind, user_id FROM {table} WHERE amount > 0"  # noqa: S608 - a module's constant
            " ON CONFLICT ON CONSTRAINT uq_ledger_accounts_kind DO NOTHING"
        ),
        {"kind": run.kind},
    )
    tx = open_transaction(session, period_key(run.kind, run.period_start), run.kind, run.period_end, run_id=run.id)
    session.execute(
        text(CREDIT_USERS.format(table=table)), {"tx": tx, "kind": run.kind, "source": system_account(session, source)}
    )


def refusal(exc: IntegrityError) -> PermanentError:
    """The database refused a movement: name which rule it broke as a job error code."""
    constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None) or ""
    if constraint == "ck_ledger_accounts_balance_not_negative":
        return PermanentError(
            "the movement would overdraw an account (fund the treasury with `roadie ledger fund`)",
            code="insufficient_funds",
        )
    if constraint == "ledger_transaction_balanced":
        return PermanentError("a ledger transaction did not balance", code="unbalanced_transaction")
    refused = constraint or type(exc.orig).__name__  # never the error's text: it may quote the row's values
    return PermanentError(f"the database refused the movement: {refused}", code="ledger_refused")


def fund_treasury(session: Session, amount: int, reference: str, now: dt.datetime) -> bool:
    """Move tokens from outside the books into the treasury, once per reference (e.g. a deposit signature)."""
    if amount <= 0:
        raise PermanentError("a funding amount must be positive", code="invalid_amount")
    tx = open_transaction(session, f"funding:{reference}", "funding", now, memo={"reference": reference})
    if tx is None:
        return False
    post(session, tx, {system_account(session, "external"): -amount, system_account(session, "treasury"): amount})
    return True
