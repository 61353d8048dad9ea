"""The console's dashboard: the last hour of the job ledger as charts, and the queues now as the metrics say.

The ledger keeps no samples, so the queue history is rebuilt from what it does keep: a job waits from its
creation, a re-run, a reaping, a failed attempt that will be retried, or a child finishing (its parent is
woken), until its next attempt starts or it finishes. That is the same notion of waiting as the
``roadie_queue_depth`` and ``roadie_queue_oldest_age_seconds`` gauges, whose current values the page shows
beside the charts (a retrying job counts here from its failed attempt, there only once its retry is due).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

from prometheus_client.core import Metric
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from api.console_pictures import WIDE, Chart, Drawing, lines, stacked_bars
from api.telemetry import ledger_metrics
from models.platform import ATTEMPT_OUTCOMES
from roadie.jobs.types import QUEUES

log = logging.getLogger(__name__)

MINUTES = 60
CHARTS_TIMEOUT_S = 10  # the charts read every job of the last hour; a ledger too big for that gets a page without
#: Attempts that ended in each of the last 60 minutes (bucket 0: the minute up to now), by outcome.
OUTCOMES_PER_MINUTE = text(
    """
    SELECT floor(EXTRACT(EPOCH FROM now() - finished_at) / 60)::int AS ago, outcome, count(*)
    FROM job_attempts
    WHERE finished_at > now() - interval '1 hour' AND outcome <> 'running'
    GROUP BY 1, 2
    """
)
#: Per queue, at now and at each whole minute before it over the last hour: jobs waiting, and the longest wait.
QUEUE_HISTORY = text(
    """
    WITH recent AS (
        SELECT id, queue, created_at, finished_at FROM jobs
        WHERE created_at > now() - interval '1 hour' OR finished_at > now() - interval '1 hour'
           OR status IN ('queued', 'retrying', 'running', 'waiting')
    ), starts AS (
        SELECT id AS job_id, queue, created_at AS since FROM recent
        UNION ALL
        SELECT e.job_id, r.queue, e.created_at FROM job_events e JOIN recent r ON r.id = e.job_id
        WHERE e.kind IN ('rerun', 'reaped')
        UNION ALL
        SELECT a.job_id, r.queue, a.finished_at FROM job_attempts a JOIN recent r ON r.id = a.job_id
        WHERE a.outcome = 'retrying'
        UNION ALL
        SELECT c.parent_id, r.queue, c.finished_at FROM jobs c JOIN recent r ON r.id = c.parent_id
        WHERE c.finished_at IS NOT NULL
    ), spans AS (
        SELECT s.job_id, s.queue, s.since, coalesce(
            (SELECT min(a.started_at) FROM job_attempts a WHERE a.job_id = s.job_id AND a.started_at >= s.since),
            (SELECT r.finished_at FROM recent r WHERE r.id = s.job_id AND r.finished_at >= s.since),
            'infinity'
        ) AS until
        FROM starts s
    )
    SELECT k AS ago, spans.queue, count(DISTINCT spans.job_id), max(EXTRACT(EPOCH FROM at - spans.since))
    FROM generate_series(0, 60) AS k
    CROSS JOIN LATERAL (SELECT now() - k * interval '1 minute' AS at) AS sample
    JOIN spans ON spans.since <= sample.at AND spans.until > sample.at
    GROUP BY 1, 2
    """
)


@dataclass(frozen=True)
class Dashboard:
    charts: tuple[Drawing, Drawing, Drawing] | None  # outcomes, depth, longest wait; None when the ledger was too slow
    now: dict[str, tuple[int, float]]  # queue -> (waiting jobs, oldest wait in seconds), from the gauges


def _gauges(families: list[Metric]) -> dict[str, tuple[int, float]]:
    """Each queue's depth and oldest wait from the ledger gauges the metrics endpoint serves."""
    values: dict[str, dict[str, float]] = defaultdict(dict)
    for family in families:
        for sample in family.samples:
            if sample.name in ("roadie_queue_depth", "roadie_queue_oldest_age_seconds"):
                values[sample.labels["queue"]][sample.name] = sample.value
    return {
        queue: (int(found.get("roadie_queue_depth", 0)), found.get("roadie_queue_oldest_age_seconds", 0.0))
        for queue, found in sorted(values.items())
    }


async def _charts(session: AsyncSession) -> tuple[Drawing, Drawing, Drawing]:
    outcomes = {outcome: [0.0] * MINUTES for outcome in ATTEMPT_OUTCOMES if outcome != "running"}
    for ago, outcome, count in await session.execute(OUTCOMES_PER_MINUTE):
        if 0 <= ago < MINUTES and outcome in outcomes:
            outcomes[outcome][MINUTES - 1 - ago] = float(count)
    depth = {queue: [0.0] * (MINUTES + 1) for queue in QUEUES}
    oldest = {queue: [0.0] * (MINUTES + 1) for queue in QUEUES}
    for ago, queue, count, longest in await session.execute(QUEUE_HISTORY):
        depth.setdefault(queue, [0.0] * (MINUTES + 1))[MINUTES - ago] = float(count)
        oldest.setdefault(queue, [0.0] * (MINUTES + 1))[MINUTES - ago] = float(longest or 0)
    hour = ("an hour ago", "now")
    return (
        stacked_bars(Chart("Attempts ended per minute, by outcome", "attempts / min", hour, outcomes, WIDE)),
        lines(Chart("Jobs waiting to run, by queue", "jobs", hour, depth)),
        lines(Chart("Longest wait in each queue", "seconds", hour, oldest)),
    )


async def dashboard(session: AsyncSession) -> Dashboard:
    """The three charts of the last hour (if the ledger answers within the time limit) and the queues now."""
    charts = None
    try:
        async with session.begin_nested():  # a cancelled query rolls back to here, and the page goes on
            await session.execute(text(f"SET LOCAL statement_timeout = '{CHARTS_TIMEOUT_S}s'"))
            charts = await _charts(session)
    except DBAPIError:
        log.warning("console.dashboard_charts_unavailable", exc_info=True)
    return Dashboard(charts=charts, now=_gauges(await ledger_metrics()))
