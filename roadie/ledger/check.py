"""The ledger's invariants, checked from the entries themselves (``ledger.check`` job, ``roadie ledger check``).

1. every transaction's entries sum to zero;
2. no account's balance is negative, at any point of its history (``external`` excepted), and each
   account's kept balance equals the sum of its entries;
3. payouts equal accruals minus carry: for each payable account, what was credited minus what was paid
   out is its balance; ``clearing`` holds exactly the payouts not yet finalized;
4. nothing is paid that is not finalized: money reached ``external`` from ``clearing`` only for finalized
   payouts, in the amounts of those payouts;
5. money that left on chain is settled in the books: no payout stays unsettled longer than
   ``ledger_settle_grace_s`` after its transfer was finalized, and each finalized transfer's amount is the
   sum of the settled payouts it carried;
6. treasury plus everything owed (user accounts and ``clearing``) equals what came in from outside
   (funding, stakes, royalty proceeds) less the settled payouts.

The settlement checks (:data:`SETTLEMENT_CHECKS`) read only payouts, transfers and account balances, so the
API also exports them as the ``roadie_ledger_violations`` gauge on every scrape; the alert rule in
``docs/alerts/ledger.rules.yml`` fires on the same conditions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from roadie.settings import Settings

CHECKS: dict[str, str] = {
    "transactions_balance": """
        SELECT transaction_id AS subject, sum(amount) AS value
        FROM ledger_entries GROUP BY transaction_id HAVING sum(amount) <> 0
    """,
    "no_negative_balance": """
        SELECT account_id AS subject, min(running) AS value
        FROM (
            SELECT e.account_id, sum(e.amount) OVER (PARTITION BY e.account_id ORDER BY e.id) AS running
            FROM ledger_entries AS e JOIN ledger_accounts AS a ON a.id = e.account_id
            WHERE a.kind <> 'external'
        ) AS history
        GROUP BY account_id HAVING min(running) < 0
    """,
    "balance_is_sum_of_entries": """
        SELECT a.id AS subject, a.balance - COALESCE(sum(e.amount), 0) AS value
        FROM ledger_accounts AS a LEFT JOIN ledger_entries AS e ON e.account_id = a.id
        GROUP BY a.id HAVING a.balance <> COALESCE(sum(e.amount), 0)
    """,
    "payouts_are_accruals_minus_carry": """
        SELECT a.id AS subject, credited - a.balance - COALESCE(p.total, 0) AS value
        FROM ledger_accounts AS a
        JOIN (
            SELECT account_id, sum(amount) FILTER (WHERE amount > 0) AS credited FROM ledger_entries GROUP BY 1
        ) AS c ON c.account_id = a.id
        LEFT JOIN (SELECT account_id, sum(amount) AS total FROM payouts GROUP BY 1) AS p ON p.account_id = a.id
        WHERE a.kind IN ('rewards', 'royalties', 'staking')
          AND COALESCE(credited, 0) - a.balance <> COALESCE(p.total, 0)
    """,
    "clearing_holds_unfinalized_payouts": """
        SELECT 'clearing' AS subject, COALESCE(c.balance, 0) - COALESCE(p.total, 0) AS value
        FROM (SELECT sum(balance) AS balance FROM ledger_accounts WHERE kind = 'clearing') AS c,
             (SELECT sum(amount) AS total FROM payouts WHERE status <> 'finalized') AS p
        WHERE COALESCE(c.balance, 0) <> COALESCE(p.total, 0)
    """,
    "paid_only_when_finalized": """
        SELECT t.id AS subject, COALESCE(e.paid, 0) - COALESCE(p.total, 0) AS value
        FROM ledger_transactions AS t
        LEFT JOIN (
            SELECT e.transaction_id, sum(e.amount) AS paid
            FROM ledger_entries AS e JOIN ledger_accounts AS a ON a.id = e.account_id AND a.kind = 'external'
            GROUP BY 1
        ) AS e ON e.transaction_id = t.id
        LEFT JOIN (
            SELECT settled_transaction_id, sum(amount) AS total
            FROM payouts WHERE status = 'finalized' GROUP BY 1
        ) AS p ON p.settled_transaction_id = t.id
        WHERE t.kind = 'payout_settled' AND COALESCE(e.paid, 0) <> COALESCE(p.total, 0)
        UNION ALL
        SELECT t.id, sum(e.amount)
        FROM ledger_transactions AS t
        JOIN ledger_entries AS e ON e.transaction_id = t.id
        JOIN ledger_accounts AS a ON a.id = e.account_id AND a.kind = 'clearing'
        WHERE t.kind <> 'payout_settled' AND e.amount < 0
        GROUP BY t.id
    """,
    "payouts_settled_once_finalized": """
        SELECT p.id AS subject, CAST(extract(epoch FROM now() - t.updated_at) AS bigint) AS value
        FROM payouts AS p
        JOIN payout_transfers AS t ON t.batch_id = p.batch_id AND t.recipient_wallet = p.wallet
        WHERE p.status <> 'finalized' AND t.status = 'finalized'
          AND t.updated_at < now() - make_interval(secs => :grace_s)
    """,
    "finalized_transfers_settled": """
        SELECT t.id AS subject,
               t.amount - COALESCE(sum(p.amount) FILTER (WHERE p.status = 'finalized'), 0) AS value
        FROM payout_transfers AS t
        JOIN payouts AS p ON p.batch_id = t.batch_id AND p.wallet = t.recipient_wallet
        WHERE t.status = 'finalized' AND t.updated_at < now() - make_interval(secs => :grace_s)
        GROUP BY t.id, t.amount
        HAVING t.amount <> COALESCE(sum(p.amount) FILTER (WHERE p.status = 'finalized'), 0)
    """,
    "treasury_plus_owed_is_funded_less_paid": """
        SELECT 'books' AS subject, held - (funded - paid) AS value
        FROM (SELECT COALESCE(sum(balance), 0) AS held FROM ledger_accounts WHERE kind <> 'external') AS h,
             (
                 SELECT COALESCE(-sum(e.amount), 0) AS funded
                 FROM ledger_entries AS e
                 JOIN ledger_accounts AS a ON a.id = e.account_id AND a.kind = 'external'
                 JOIN ledger_transactions AS t ON t.id = e.transaction_id AND t.kind <> 'payout_settled'
             ) AS f,
             (SELECT COALESCE(sum(amount), 0) AS paid FROM payouts WHERE status = 'finalized') AS p
        WHERE held <> funded - paid
    """,
}

#: The checks cheap enough for every metrics scrape: they catch money that left on chain but not the books.
SETTLEMENT_CHECKS = (
    "clearing_holds_unfinalized_payouts",
    "payouts_settled_once_finalized",
    "finalized_transfers_settled",
    "treasury_plus_owed_is_funded_less_paid",
)


@dataclass(frozen=True)
class Violation:
    check: str
    subject: str
    value: str


def _parameters(settings: Settings) -> dict[str, Any]:
    return {"grace_s": settings.ledger_settle_grace_s}


def violations(session: Session, settings: Settings) -> list[Violation]:
    """Every broken invariant, as (check, subject, value); empty when the books are sound."""
    parameters = _parameters(settings)
    return [
        Violation(name, str(subject), str(value))
        for name, query in CHECKS.items()
        for subject, value in session.execute(text(query), parameters)
    ]


async def settlement_violations(session: AsyncSession, settings: Settings) -> dict[str, int]:
    """How many subjects break each settlement check now (0 for a sound one), for the metrics scrape."""
    parameters = _parameters(settings)
    counts = {}
    for name in SETTLEMENT_CHECKS:
        counts[name] = len((await session.execute(text(CHECKS[name]), parameters)).all())
    return counts


def report(found: list[Violation]) -> dict[str, Any]:
    return {"ok": not found, "checks": list(CHECKS), "violations": [asdict(v) for v in found]}
