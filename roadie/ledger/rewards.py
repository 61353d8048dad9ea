"""Listening rewards: a period's plays become capped, budgeted claims and balanced ledger entries, in SQL.

A play belongs to the first rewards run after it was received (``received_at < period_end`` and not yet
marked), so a play that arrives late, or commits while a run reads, is counted by the next run instead of
being lost. It counts when it lasted ``least(min_listen, ceil(duration / 2))`` ms, within the daily caps
per listener-track and per listener (UTC days of ``started_at``, counting what earlier runs counted).
Each counted play claims the listener rate for the listener and the artist rate for the track's artist.
Claims are paid from the treasury by :func:`roadie.ledger.money.capped_pro_rata`'s rule.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from models.ledger import LedgerRun, Play
from roadie.ledger.books import credit_users
from roadie.settings import Settings

CLAIMS_TABLE = """
CREATE TEMP TABLE reward_claims (
    user_id uuid PRIMARY KEY, seen bigint NOT NULL, counted bigint NOT NULL, claim numeric NOT NULL
) ON COMMIT DROP
"""

#: Classify and mark the period's plays and aggregate each user's claim, in one statement.
MARK_AND_CLAIM = """
WITH batch AS (
    SELECT p.id, p.listener_id, p.track_id, t.artist_id, p.started_at,
           CAST(p.started_at AT TIME ZONE 'UTC' AS date) AS day,
           p.ms_listened >= least(:min_ms, COALESCE((t.duration_ms + 1) / 2, :min_ms)) AS long_enough
    FROM plays AS p JOIN tracks AS t ON t.id = p.track_id
    WHERE p.run_id IS NULL AND p.received_at < :period_end
),
eligible AS (SELECT * FROM batch WHERE long_enough),
track_prior AS (
    SELECT c.listener_id, c.track_id, CAST(c.started_at AT TIME ZONE 'UTC' AS date) AS day, count(*) AS n
    FROM plays AS c
    WHERE c.counted
      AND c.started_at >= CAST((SELECT min(day) FROM eligible) AS timestamp) AT TIME ZONE 'UTC'
      AND c.listener_id IN (SELECT listener_id FROM eligible)
    GROUP BY 1, 2, 3
),
listener_prior AS (SELECT listener_id, day, sum(n) AS n FROM track_prior GROUP BY 1, 2),
within_track_cap AS (
    SELECT e.id, e.listener_id, e.day, e.started_at
    FROM (
        SELECT e.*, row_number() OVER (PARTITION BY e.listener_id, e.track_id, e.day ORDER BY e.started_at, e.id)
                    + COALESCE(tp.n, 0) AS nth
        FROM eligible AS e LEFT JOIN track_prior AS tp USING (listener_id, track_id, day)
    ) AS e
    WHERE e.nth <= :per_track
),
counted AS (
    SELECT w.id
    FROM (
        SELECT w.id, row_number() OVER (PARTITION BY w.listener_id, w.day ORDER BY w.started_at, w.id)
                     + COALESCE(lp.n, 0) AS nth
        FROM within_track_cap AS w LEFT JOIN listener_prior AS lp USING (listener_id, day)
    ) AS w
    WHERE w.nth <= :per_listener
),
marked AS (
    UPDATE plays AS p SET run_id = :run_id, counted = (c.id IS NOT NULL)
    FROM batch AS b LEFT JOIN counted AS c ON c.id = b.id
    WHERE p.id = b.id
    RETURNING p.listener_id, b.artist_id, p.counted
)
INSERT INTO reward_claims (user_id, seen, counted, claim)
SELECT user_id, sum(seen), sum(counted), sum(claim)
FROM (
    SELECT listener_id AS user_id, 1 AS seen, CAST(counted AS int) AS counted,
           CASE WHEN counted THEN :listener_rate ELSE 0 END AS claim
    FROM marked
    UNION ALL
    SELECT artist_id, 0, 0, :artist_rate FROM marked WHERE counted
) AS claims
GROUP BY user_id
"""

ALLOCATIONS_TABLE = """
CREATE TEMP TABLE reward_allocations (user_id uuid PRIMARY KEY, amount numeric NOT NULL) ON COMMIT DROP
"""

#: money.capped_pro_rata in SQL: claims up to the cap; over budget, water-filling with largest remainders.
ALLOCATE = """
WITH wanted AS (
    SELECT user_id, claim, least(claim, CAST(:cap AS numeric)) AS wanted FROM reward_claims WHERE claim > 0
),
over_budget AS (SELECT COALESCE(sum(wanted), 0) > CAST(:budget AS numeric) AS scaled FROM wanted),
ranked AS (
    SELECT user_id, claim,
           row_number() OVER (ORDER BY claim DESC, user_id) AS k,
           sum(claim) OVER (ORDER BY claim DESC, user_id ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) AS rest
    FROM wanted
),
first_uncapped AS (
    SELECT k, CAST(:budget AS numeric) - (k - 1) * CAST(:cap AS numeric) AS pool, rest
    FROM ranked
    WHERE (CAST(:budget AS numeric) - (k - 1) * CAST(:cap AS numeric)) * claim <= CAST(:cap AS numeric) * rest
    ORDER BY k
    LIMIT 1
),
floored AS (
    SELECT r.user_id,
           CASE WHEN r.k < f.k THEN CAST(:cap AS numeric) ELSE div(f.pool * r.claim, f.rest) END AS amount,
           CASE WHEN r.k < f.k THEN 0 ELSE mod(f.pool * r.claim, f.rest) END AS remainder
    FROM ranked AS r CROSS JOIN first_uncapped AS f
),
leftover AS (SELECT CAST(:budget AS numeric) - sum(amount) AS units FROM floored),
scaled AS (
    SELECT user_id,
           amount + CASE WHEN row_number() OVER (ORDER BY remainder DESC, user_id) <= (SELECT units FROM leftover)
                         THEN 1 ELSE 0 END AS amount
    FROM floored
)
INSERT INTO reward_allocations (user_id, amount)
SELECT user_id, wanted FROM wanted WHERE NOT (SELECT scaled FROM over_budget)
UNION ALL
SELECT user_id, amount FROM scaled WHERE (SELECT scaled FROM over_budget)
"""


def first_pending(session: Session) -> dt.datetime | None:
    return session.scalar(select(func.min(Play.received_at)).where(Play.run_id.is_(None)))


def allocate(session: Session, budget: int, cap: int) -> None:
    """Fill ``reward_allocations`` from ``reward_claims`` (both temp tables of this transaction)."""
    session.execute(text(ALLOCATIONS_TABLE))
    session.execute(text(ALLOCATE), {"budget": budget, "cap": cap})


def accrue(session: Session, run: LedgerRun, settings: Settings) -> dict[str, Any]:
    """The rewards of one period: mark its plays, allocate the budget, post treasury -> rewards accounts."""
    session.execute(text(CLAIMS_TABLE))
    session.execute(
        text(MARK_AND_CLAIM),
        {
            "run_id": run.id,
            "period_end": run.period_end,
            "min_ms": settings.ledger_min_listen_ms,
            "per_track": settings.ledger_daily_plays_per_track,
            "per_listener": settings.ledger_daily_plays_per_listener,
            "listener_rate": settings.ledger_listener_rate,
            "artist_rate": settings.ledger_artist_rate,
        },
    )
    allocate(session, settings.ledger_reward_budget, settings.ledger_reward_user_cap)
    seen, counted, claimed, paid, users = session.execute(
        text(
            "SELECT COALESCE(sum(seen), 0), COALESCE(sum(counted), 0), COALESCE(sum(claim), 0),"
            " (SELECT COALESCE(sum(amount), 0) FROM reward_allocations),"
            " (SELECT count(*) FROM reward_allocations WHERE amount > 0) FROM reward_claims"
        )
    ).one()
    if paid:
        credit_users(session, run, "reward_allocations", "treasury")
    return {
        "plays": int(seen),
        "counted": int(counted),
        "claimed": int(claimed),
        "accrued": int(paid),
        "users": int(users),
    }
