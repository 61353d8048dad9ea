"""Payouts: at the end of each period, balances of the period's account kind go to their owners' wallets.

One payout per account and period (UNIQUE(account_id, period_start)), all of a period in one chain batch
keyed ``<kind>:<period>``. A balance below ``ledger_min_payout``, or of a user without a Solana wallet, is
not paid and carries over to a later period; a balance whose wallet cannot receive (a program, an
off-curve address) is not paid either, and is flagged in ``payout_holds`` for an admin, while the rest of
the period is paid. Creating a payout moves its amount from the account to
``clearing``; only when the chain transfer is finalized does it move from ``clearing`` to ``external``
(paid). The batch is paid by :mod:`roadie.chain.transfers` (``chain.transfer_batch``); each payout follows its
transfer's status (``ledger.follow_payouts``). A failed batch keeps its payouts in ``clearing`` until an admin
re-runs the batch's job.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from models.ledger import PAYOUT_STATUSES, LedgerRun
from roadie.chain.addresses import why_not_a_wallet
from roadie.ledger.books import open_transaction, period_key, system_account
from roadie.settings import Settings

#: Balances due this period, with the wallet each would go to, locked until the run commits.
DUE = """
SELECT a.id, a.balance, w.address
FROM ledger_accounts AS a
CROSS JOIN LATERAL (
    SELECT w.address
    FROM user_wallets AS uw JOIN wallets AS w ON w.id = uw.wallet_id
    WHERE uw.user_id = a.user_id AND w.chain = 'solana'
    ORDER BY w.is_primary DESC, uw.created_at, w.address
    LIMIT 1
) AS w
WHERE a.kind = :kind AND a.balance >= :minimum
ORDER BY a.id
FOR UPDATE OF a
"""

CREATE = """
WITH due AS (
    SELECT * FROM unnest(CAST(:accounts AS bigint[]), CAST(:amounts AS numeric[]), CAST(:wallets AS varchar[]))
        AS due(account_id, amount, address)
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
),
released AS (DELETE FROM payout_holds WHERE account_id IN (SELECT account_id FROM created))
SELECT count(*), COALESCE(sum(amount), 0) FROM created
"""

#: Flag the balances that stay owed because their wallet cannot receive; the first flag's time is kept.
HOLD = """
INSERT INTO payout_holds (account_id, wallet, reason, last_period_start)
SELECT held.*, CAST(:period_start AS timestamptz)
FROM unnest(CAST(:accounts AS bigint[]), CAST(:wallets AS varchar[]), CAST(:reasons AS varchar[]))
    AS held(account_id, wallet, reason)
ON CONFLICT (account_id) DO UPDATE
SET wallet = excluded.wallet, reason = excluded.reason, last_period_start = excluded.last_period_start,
    updated_at = now()
"""

#: Settle finalized payouts: each gets its own ``payout_settled`` transaction (clearing -> external), keyed by
#: the payout's id, so a payout is settled once however many passes see it, and a pass may settle any number.
SETTLE = """
WITH due AS (
    SELECT id, amount FROM payouts WHERE id = ANY(:ids) AND status <> 'finalized' ORDER BY id FOR UPDATE
),
opened AS (
    INSERT INTO ledger_transactions (key, kind, effective_at, memo)
    SELECT 'payout_settled:' || id, 'payout_settled', :now, jsonb_build_object('payout_id', id) FROM due
    ON CONFLICT (key) DO NOTHING
    RETURNING id AS transaction_id, CAST(memo ->> 'payout_id' AS bigint) AS payout_id
),
settled AS (
    UPDATE payouts AS p SET status = 'finalized', settled_transaction_id = o.transaction_id, updated_at = now()
    FROM opened AS o
    WHERE p.id = o.payout_id
    RETURNING p.amount, o.transaction_id
),
entries AS (
    INSERT INTO ledger_entries (transaction_id, account_id, amount)
    SELECT transaction_id, :clearing, -amount FROM settled
    UNION ALL
    SELECT transaction_id, :external, amount FROM settled
)
SELECT count(*), COALESCE(sum(amount), 0) FROM settled
"""


def create(session: Session, run: LedgerRun, settings: Settings) -> dict[str, Any]:
    """The period's payouts of the run's account kind, moved to clearing and handed to the chain.

    A balance whose wallet cannot receive (see :func:`roadie.chain.addresses.why_not_a_wallet`) is not paid:
    it stays owed on its account and is flagged in ``payout_holds`` for an admin, and everyone else is paid.
    """
    batch_key = period_key(run.kind, run.period_start)
    tx = open_transaction(session, f"payout:{batch_key}", "payout", run.period_end, run_id=run.id)
    if tx is None:
        return {"payouts": 0, "paid_out": 0, "held": 0}
    payable: list[tuple[int, int, str]] = []
    held: list[tuple[int, str, str]] = []
    for account, amount, wallet in session.execute(
        text(DUE), {"kind": run.kind, "minimum": settings.ledger_min_payout}
    ):
        problem = why_not_a_wallet(wallet)
        if problem:
            held.append((int(account), wallet, problem))
        else:
            payable.append((int(account), int(amount), wallet))
    if held:
        session.execute(
            text(HOLD),
            {
                "accounts": [account for account, _, _ in held],
                "wallets": [wallet for _, wallet, _ in held],
                "reasons": [reason for _, _, reason in held],
                "period_start": run.period_start,
            },
        )
    count, amount = session.execute(
        text(CREATE),
        {
            "accounts": [account for account, _, _ in payable],
            "amounts": [amount for _, amount, _ in payable],
            "wallets": [wallet for _, _, wallet in payable],
            "kind": run.kind,
            "period_start": run.period_start,
            "batch_key": batch_key,
            "tx": tx,
            "clearing": system_account(session, "clearing"),
        },
    ).one()
    if not count:
        session.execute(text("DELETE FROM ledger_transactions WHERE id = :tx"), {"tx": tx})
        return {"payouts": 0, "paid_out": 0, "held": len(held)}
    transfers = session.execute(
        text("SELECT wallet, amount FROM payouts WHERE batch_key = :key ORDER BY id"), {"key": batch_key}
    ).all()
    batch_id = hand_to_chain(session, batch_key, [(wallet, int(amount)) for wallet, amount in transfers])
    session.execute(
        text("UPDATE payouts SET batch_id = :batch WHERE batch_key = :key"), {"batch": batch_id, "key": batch_key}
    )
    return {"payouts": int(count), "paid_out": int(amount), "held": len(held)}


def hand_to_chain(session: Session, batch_key: str, transfers: list[tuple[str, int]]) -> uuid.UUID:
    """Record the period's chain batch and its ``chain.transfer_batch`` job in this transaction.

    :func:`roadie.chain.transfers.create_batch` adds up amounts to one wallet and returns the existing
    batch when called again with the key, so a payout's transfer is the batch's transfer to its wallet.
    It refuses a wallet that cannot receive; :func:`create` has held those back already.
    """
    from roadie.chain.transfers import create_batch

    return create_batch(session, batch_key, transfers)


#: A payout's status is its transfer's; a failed batch (it can be re-run) shows as failed until it moves on.
CHAIN_STATUSES = """
SELECT p.id,
       CASE WHEN b.status = 'failed' AND t.status IN ('pending', 'failed') THEN 'failed' ELSE t.status END
FROM payouts AS p
JOIN payout_batches AS b ON b.id = p.batch_id
JOIN payout_transfers AS t ON t.batch_id = p.batch_id AND t.recipient_wallet = p.wallet
WHERE p.status <> 'finalized'
"""


def chain_statuses(session: Session) -> dict[int, str]:
    """The chain status of every payout not yet finalized (the indexer and the batch job keep them current)."""
    return {int(payout): status for payout, status in session.execute(text(CHAIN_STATUSES))}


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
    count, amount = session.execute(
        text(SETTLE),
        {
            "ids": finalized,
            "now": now,
            "clearing": system_account(session, "clearing"),
            "external": system_account(session, "external"),
        },
    ).one()
    return {"settled": int(count), "settled_amount": int(amount)}


HOLDS = """
SELECT h.account_id, a.user_id, a.kind, a.balance AS owed, h.wallet, h.reason, h.held_since, h.last_period_start
FROM payout_holds AS h JOIN ledger_accounts AS a ON a.id = h.account_id
ORDER BY h.held_since, h.account_id
LIMIT :limit
"""


async def held(session: AsyncSession, limit: int = 500) -> list[dict[str, Any]]:
    """Balances owed but not paid because their wallet cannot receive, oldest first (admins' API and console)."""
    return [
        {
            "account_id": row.account_id,
            "user_id": str(row.user_id),
            "kind": row.kind,
            "owed": str(int(row.owed)),
            "wallet": row.wallet,
            "reason": row.reason,
            "held_since": row.held_since.isoformat(),
            "last_period_start": row.last_period_start.isoformat(),
        }
        for row in await session.execute(text(HOLDS), {"limit": limit})
    ]
