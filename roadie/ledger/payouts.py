"""Payouts: at the end of each period, balances of the period's account kind go to their owners' wallets.

One payout per account and period (UNIQUE(account_id, period_start)), all of a period in one chain batch
keyed ``<kind>:<period>``. A balance below ``ledger_min_payout``, or of a user without a Solana wallet, is
not paid and carries over to a later period. Creating a payout moves its amount from the account to
``clearing``; only when the chain transfer is finalized does it move from ``clearing`` to ``external``
(paid). A failed batch keeps its payouts in ``clearing`` until an admin re-runs it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from models.ledger import PAYOUT_STATUSES, LedgerRun
from roadie.ledger.books import open_transaction, period_key, system_account
from roadie.settings import Settings

CREATE = """
WITH due AS (
    SELECT a.id AS account_id, a.balance AS amount, w.address
    FROM ledger_accounts AS a
    CROSS JOIN LATERAL (
        SELECT w.address
        FROM user_wallets AS uw JOIN wallets AS w ON w.id = uw.wallet_id
        WHERE uw.user_id = a.user_id AND w.chain = 'solana'
        ORDER BY w.is_primary DESC, uw.created_at, w.address
        LIMIT 1
    ) AS w
    WHERE a.kind = :kind AND a.balance >= :minimum
    FOR UPDATE OF a
),
created AS (
    INSERT INTO payouts (account_id, kind, period_start, amount, wallet, batch_key, transaction_id)
    SELECT account_id, :kind, :period_start, amount, address, :batch_key, :tx FROM due
    ON CONFLICT (account_id, period_start) DO NOTHING
    RETURNING account_id, amount
),
entries AS (
    INSERT INTO ledger_entries (transaction_id, account_id, amount)
    SELECT :tx, account_id, -amount FROM created
    UNION ALL
    SELECT :tx, :clearing, sum(amount) FROM created HAVING sum(amount) > 0
    RETURNING amount
)
SELECT count(*), COALESCE(sum(amount), 0) FROM created
"""

SETTLE = """
WITH settled AS (
    UPDATE payouts SET status = 'finalized', settled_transaction_id = :tx, updated_at = now()
    WHERE id = ANY(:ids) AND status <> 'finalized'
    RETURNING amount
),
entries AS (
    INSERT INTO ledger_entries (transaction_id, account_id, amount)
    SELECT :tx, :clearing, -sum(amount) FROM settled HAVING sum(amount) > 0
    UNION ALL
    SELECT :tx, :external, sum(amount) FROM settled HAVING sum(amount) > 0
    RETURNING amount
)
SELECT count(*), COALESCE(sum(amount), 0) FROM settled
"""


def create(session: Session, run: LedgerRun, settings: Settings) -> dict[str, Any]:
    """The period's payouts of the run's account kind, moved to clearing and handed to the chain."""
    batch_key = period_key(run.kind, run.period_start)
    tx = open_transaction(session, f"payout:{batch_key}", "payout", run.period_end, run_id=run.id)
    if tx is None:
        return {"payouts": 0, "paid_out": 0}
    count, amount = session.execute(
        text(CREATE),
        {
            "kind": run.kind,
            "minimum": settings.ledger_min_payout,
            "period_start": run.period_start,
            "batch_key": batch_key,
            "tx": tx,
            "clearing": system_account(session, "clearing"),
        },
    ).one()
    if not count:
        session.execute(text("DELETE FROM ledger_transactions WHERE id = :tx"), {"tx": tx})
        return {"payouts": 0, "paid_out": 0}
    transfers = session.execute(
        text("SELECT id, wallet, amount FROM payouts WHERE batch_key = :key ORDER BY id"), {"key": batch_key}
    ).all()
    batch_id = hand_to_chain(session, batch_key, [(row.id, row.wallet, int(row.amount)) for row in transfers])
    if batch_id is not None:
        session.execute(
            text("UPDATE payouts SET batch_id = :batch WHERE batch_key = :key"), {"batch": batch_id, "key": batch_key}
        )
    return {"payouts": int(count), "paid_out": int(amount)}


def hand_to_chain(session: Session, batch_key: str, transfers: list[tuple[int, str, int]]) -> str | None:
    """SEAM to the chain branch (issue 4): record the batch and enqueue ``chain.transfer_batch``.

    ``roadie.chain.transfers`` records a payout batch under ``batch_key`` with one transfer per
    (payout id, wallet, amount) inside this transaction and returns its id. Until that branch is merged the
    payouts stay ``pending`` without a batch: nothing is sent, and nothing counts as paid.
    """
    return None


def chain_statuses(session: Session) -> dict[int, str]:
    """SEAM to the chain branch (issue 4): the chain status of every unsettled payout's transfer.

    Empty until ``roadie.chain.transfers`` is merged; no payout changes status without the chain.
    """
    return {}


def follow_chain(session: Session) -> dict[str, int]:
    """Let payouts follow their transfers' statuses (the beat's ``ledger_payout_status``)."""
    return apply_statuses(session, chain_statuses(session), dt.datetime.now(dt.UTC))


def apply_statuses(session: Session, statuses: Mapping[int, str], now: dt.datetime) -> dict[str, int]:
    """Set payouts to their transfers' statuses; finalized ones are settled, once, to ``external``.

    A finalized payout never changes again; a failed one may go back to ``submitted`` when re-run.
    """
    unknown = set(statuses.values()) - set(PAYOUT_STATUSES)
    if unknown:
        raise ValueError(f"unknown payout statuses: {', '.join(sorted(unknown))}")
    moving = {payout: status for payout, status in statuses.items() if status != "finalized"}
    if moving:
        session.execute(
            text(
                "UPDATE payouts AS p SET status = s.status, updated_at = now()"
                " FROM unnest(CAST(:ids AS bigint[]), CAST(:statuses AS varchar[])) AS s(id, status)"
                " WHERE p.id = s.id AND p.status NOT IN ('finalized', s.status)"
            ),
            {"ids": list(moving), "statuses": list(moving.values())},
        )
    finalized = sorted(payout for payout, status in statuses.items() if status == "finalized")
    if not finalized:
        return {"settled": 0, "settled_amount": 0}
    key = f"payout_settled:{finalized[0]}-{finalized[-1]}:{len(finalized)}:{now.isoformat()}"
    tx = open_transaction(session, key, "payout_settled", now)
    if tx is None:
        return {"settled": 0, "settled_amount": 0}
    count, amount = session.execute(
        text(SETTLE),
        {
            "ids": finalized,
            "tx": tx,
            "clearing": system_account(session, "clearing"),
            "external": system_account(session, "external"),
        },
    ).one()
    if not count:
        session.execute(text("DELETE FROM ledger_transactions WHERE id = :tx"), {"tx": tx})
    return {"settled": int(count), "settled_amount": int(amount)}
