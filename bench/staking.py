"""Staking interest of one period for N positions versus the bare statement computing the same amounts.

    python -m bench.staking [--positions 1000000]

Both run on the same scratch database and the same seeded data: N APR positions of 100,000 users,
rates of 1 to 50 %, principals up to 10^15 base units, some with a carry, all accrued up to the
period's start.

Baseline: ONE statement that computes each position's interest for the day,
``floor((principal * rate_bps * 86400 + carry) / (10000 * 31536000))`` and its new carry, into an
unlogged table. Roadie: ``roadie.ledger.periods.run_next_period("staking")``: the same amounts, plus
the ``staking_payouts`` rows under UNIQUE(position, period_start), the positions' new carry and
``accrued_until``, the ledger transaction (one entry per user's staking account and the treasury leg),
the run row and the payout step (no user has a wallet here, so no payout is made). The two must agree
on every amount; the baseline runs first because Roadie advances the positions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

from bench.common import Row, configure_environment, database_connection, print_table, run_main, scratch_database

PERIOD_START = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)

SEED = (
    "INSERT INTO users (id, username) SELECT gen_random_uuid(), 'bench-' || g FROM generate_series(1, 100000) AS g",
    "CREATE TEMP TABLE people AS SELECT row_number() OVER (ORDER BY id) AS n, id FROM users",
    """
    INSERT INTO staking_positions
        (id, user_id, mint_address, amount, rate_bps, rate_kind, lock_seconds, carry, started_at, accrued_until)
    SELECT gen_random_uuid(), p.id, 'bench', 1 + mod(g * 7919, 1000000) * 1000000000, 100 + mod(g, 4901), 'apr', 0,
           mod(g * 104729, 315360000000), %(start)s::timestamptz - interval '3 days', %(start)s::timestamptz
    FROM generate_series(1, CAST(%(positions)s AS bigint)) AS g JOIN people AS p ON p.n = 1 + mod(g, 100000)
    """,
    """
    INSERT INTO ledger_accounts (kind, user_id)
    SELECT k, id FROM users CROSS JOIN (VALUES ('stake'), ('staking')) AS k(k)
    """,
    "INSERT INTO ledger_accounts (kind) VALUES ('external'), ('treasury')",
    "INSERT INTO ledger_transactions (key, kind, effective_at) VALUES ('funding:bench', 'funding', now())",
    """
    INSERT INTO ledger_entries (transaction_id, account_id, amount)
    SELECT t.id, a.id, CASE a.kind WHEN 'treasury' THEN 1 ELSE -1 END * CAST(10 AS numeric) ^ 24
    FROM ledger_transactions AS t CROSS JOIN ledger_accounts AS a WHERE a.user_id IS NULL
    """,
    "ANALYZE",
)

BARE = """
CREATE UNLOGGED TABLE bare_interest AS
SELECT id, div(amount * rate_bps * 86400 + carry, 315360000000) AS paid,
       mod(amount * rate_bps * 86400 + carry, 315360000000) AS carry_after
FROM staking_positions
WHERE status = 'active' AND accrued_until < %(end)s
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", type=int, default=1_000_000)
    args = parser.parse_args()
    configure_environment()
    with scratch_database():
        from sqlalchemy import text

        from roadie.db import transaction
        from roadie.ledger.periods import run_next_period
        from roadie.settings import Settings

        settings = Settings()
        end = PERIOD_START + dt.timedelta(seconds=settings.ledger_staking_period_s)
        seeded = time.perf_counter()
        with database_connection() as connection:
            for statement in SEED:
                params = {"start": PERIOD_START, "positions": args.positions} if "%(" in statement else None
                connection.execute(statement, params)
            print(f"seeded {args.positions:,} positions in {time.perf_counter() - seeded:.1f} s")
            began = time.perf_counter()
            connection.execute(BARE, {"end": end})
            bare_s = time.perf_counter() - began

        began = time.perf_counter()
        result = run_next_period("staking", end + dt.timedelta(minutes=1), settings)
        roadie_s = time.perf_counter() - began
        assert result is not None
        with transaction() as session:
            differing = session.execute(
                text(
                    "SELECT count(*) FROM bare_interest AS b"
                    " LEFT JOIN staking_payouts AS s ON s.position_id = b.id AND s.period_start = :start"
                    " WHERE s.amount IS DISTINCT FROM b.paid OR s.carry_after IS DISTINCT FROM b.carry_after"
                ),
                {"start": PERIOD_START},
            ).scalar_one()
            bare_total = session.execute(text("SELECT sum(paid) FROM bare_interest")).scalar_one()
        assert differing == 0, f"{differing} positions differ"
        assert result["positions"] == args.positions
        assert result["interest"] == bare_total
        print(f"{result['positions']:,} positions paid {result['interest']:,} base units of interest")
        print_table(
            f"staking interest of {args.positions:,} positions (one period)",
            [
                Row("positions/s", args.positions / roadie_s, args.positions / bare_s, 0),
                Row("seconds", roadie_s, bare_s, 2),
            ],
        )
    return 0


if __name__ == "__main__":
    run_main(main)
