"""Reward accrual of one period's plays versus one hand-written statement doing the same aggregation.

    python -m bench.accrual [--plays 1000000]

Both run on the same scratch database and the same seeded data: 2,000 listeners, 1,000 artists,
5,000 tracks of 20 s to 5 min, and N plays received in one hour with 0 to 4 minutes listened (so the
30-second rule, the half-a-short-track rule and the daily per-listener cap all bite).

Baseline: ONE statement that classifies the plays by the same rules (minimum listen, daily caps by
window functions) and aggregates each user's claim into a temporary table. Nothing is written back.
Roadie: ``roadie.ledger.periods.run_next_period("rewards")``: the same classification, plus marking
every play with its run, the budget allocation (water-filling under a per-user cap, scaled because
the budget is below the claims), the ledger transaction with one entry per user and the treasury
leg, the run row, and the payout step (no user has a wallet here, so no payout is made).
The two must agree on every user's claim; the baseline runs first because Roadie marks the plays.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

from bench.common import Row, configure_environment, database_connection, print_table, run_main, scratch_database

PERIOD_START = dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)
RULES = {
    "ledger_reward_budget": 200_000_000_000,
    "ledger_reward_user_cap": 50_000_000_000,
}

SEED = (
    "INSERT INTO users (id, username) SELECT gen_random_uuid(), 'bench-' || g FROM generate_series(1, 3000) AS g",
    "CREATE TEMP TABLE people AS SELECT row_number() OVER (ORDER BY id) AS n, id FROM users",
    """
    INSERT INTO tracks (id, title, artist_id, duration_ms)
    SELECT gen_random_uuid(), 'track ' || g, p.id, 20000 + mod(g * 7919, 280000)
    FROM generate_series(1, 5000) AS g JOIN people AS p ON p.n = 2001 + mod(g, 1000)
    """,
    "CREATE TEMP TABLE numbered_tracks AS SELECT row_number() OVER (ORDER BY id) AS n, id FROM tracks",
    """
    INSERT INTO plays (event_id, listener_id, track_id, started_at, ms_listened, client, received_at)
    SELECT 'event-' || g, p.id, t.id,
           %(start)s::timestamptz + make_interval(secs => mod(g * 13, 3540)),
           mod(g * 104729, 240000), 'bench',
           %(start)s::timestamptz + make_interval(secs => mod(g * 13, 3540) + 30)
    FROM generate_series(1, CAST(%(plays)s AS bigint)) AS g
    JOIN people AS p ON p.n = 1 + mod(g, 2000)
    JOIN numbered_tracks AS t ON t.n = 1 + mod(g * 31, 5000)
    """,
    "INSERT INTO ledger_accounts (kind) VALUES ('external'), ('treasury')",
    "INSERT INTO ledger_transactions (key, kind, effective_at) VALUES ('funding:bench', 'funding', now())",
    """
    INSERT INTO ledger_entries (transaction_id, account_id, amount)
    SELECT t.id, a.id, CASE a.kind WHEN 'treasury' THEN 1 ELSE -1 END * CAST(10 AS numeric) ^ 15
    FROM ledger_transactions AS t CROSS JOIN ledger_accounts AS a
    """,
    "ANALYZE",
)

#: The same rules as roadie.ledger.rewards, by hand, in one statement: plays -> each user's claim.
BARE = """
CREATE TEMP TABLE bare_claims AS
WITH eligible AS (
    SELECT p.id, p.listener_id, p.track_id, t.artist_id, p.started_at,
           CAST(p.started_at AT TIME ZONE 'UTC' AS date) AS day
    FROM plays AS p JOIN tracks AS t ON t.id = p.track_id
    WHERE p.run_id IS NULL AND p.received_at < %(end)s
      AND p.ms_listened >= least(%(min_ms)s, COALESCE((t.duration_ms + 1) / 2, %(min_ms)s))
),
per_track AS (
    SELECT *, row_number() OVER (PARTITION BY listener_id, track_id, day ORDER BY started_at, id) AS nth
    FROM eligible
),
per_listener AS (
    SELECT *, row_number() OVER (PARTITION BY listener_id, day ORDER BY started_at, id) AS nth_day
    FROM per_track WHERE nth <= %(per_track)s
),
counted AS (SELECT listener_id, artist_id FROM per_listener WHERE nth_day <= %(per_listener)s)
SELECT user_id, sum(claim) AS claim
FROM (
    SELECT listener_id AS user_id, %(listener_rate)s AS claim FROM counted
    UNION ALL
    SELECT artist_id, %(artist_rate)s FROM counted
) AS claims
GROUP BY user_id
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plays", type=int, default=1_000_000)
    args = parser.parse_args()
    configure_environment()
    with scratch_database():
        from sqlalchemy import text

        from roadie.db import sync_engine, transaction
        from roadie.ledger.periods import run_next_period
        from roadie.settings import Settings

        settings = Settings(**RULES)  # type: ignore[arg-type]
        start = PERIOD_START
        end = start + dt.timedelta(seconds=settings.ledger_reward_period_s)
        seeded = time.perf_counter()
        with database_connection() as connection:
            for statement in SEED:
                connection.execute(statement, {"start": start, "plays": args.plays} if "%(" in statement else None)
        print(f"seeded {args.plays:,} plays in {time.perf_counter() - seeded:.1f} s")

        with sync_engine().begin() as connection:
            began = time.perf_counter()
            connection.exec_driver_sql(
                BARE,
                {
                    "end": end,
                    "min_ms": settings.ledger_min_listen_ms,
                    "per_track": settings.ledger_daily_plays_per_track,
                    "per_listener": settings.ledger_daily_plays_per_listener,
                    "listener_rate": settings.ledger_listener_rate,
                    "artist_rate": settings.ledger_artist_rate,
                },
            )
            bare_s = time.perf_counter() - began
            bare: dict[object, int] = dict(connection.execute(text("SELECT user_id, claim FROM bare_claims")).all())

        began = time.perf_counter()
        result = run_next_period("rewards", end + dt.timedelta(minutes=1), settings)
        roadie_s = time.perf_counter() - began
        assert result is not None
        with transaction() as session:
            marked = session.execute(text("SELECT count(*) FROM plays WHERE run_id IS NOT NULL")).scalar_one()
            counted = session.execute(text("SELECT count(*) FROM plays WHERE counted")).scalar_one()
        assert marked == args.plays, f"{marked} of {args.plays} plays marked"
        assert result["counted"] == counted
        assert result["claimed"] == sum(bare.values()), "the two disagree on the claims"
        assert result["accrued"] <= RULES["ledger_reward_budget"], result
        print(f"{counted:,} plays counted, claims {result['claimed']:,}, paid {result['accrued']:,}", end=" ")
        print(f"to {result['users']:,} users")
        print_table(
            f"accrual of {args.plays:,} plays (one period)",
            [
                Row("plays/s", args.plays / roadie_s, args.plays / bare_s, 0),
                Row("seconds", roadie_s, bare_s, 2),
            ],
        )
    return 0


if __name__ == "__main__":
    run_main(main)
