"""``roadie status``: the platform's health on one screen, from the places that know.

The job ledger knows each queue's depth and oldest waiting job, the outbox's backlog (a relay that is
down shows here) and the failures of the last hour. The workers answer Celery's ``ping`` and ``stats``
over the broker with their pool and concurrency. The API answers ``/readyz``. The chain and the IPFS
node are asked once each, without retries, so an unreachable one is an answer, not a wait.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import text

from roadie.db import transaction
from roadie.jobs.errors import PermanentError, TransientError
from roadie.settings import Settings

#: Queued or retrying jobs per queue, and how long the oldest has waited (seconds).
QUEUE_DEPTHS = text(
    """
    SELECT queue, count(*) AS waiting, EXTRACT(EPOCH FROM now() - min(created_at)) AS oldest_s
    FROM jobs WHERE status IN ('queued', 'retrying') GROUP BY queue
    """
)
OUTBOX = text("SELECT count(*), EXTRACT(EPOCH FROM now() - min(available_at)) FROM outbox WHERE available_at <= now()")
FAILED_LAST_HOUR = text(
    """
    SELECT type, coalesce(error_code, '-') AS code, count(*) FROM jobs
    WHERE status = 'failed' AND finished_at > now() - interval '1 hour'
    GROUP BY type, error_code ORDER BY count(*) DESC, type LIMIT 10
    """
)


@dataclass
class Status:
    api: str
    workers: dict[str, dict[str, Any]]  # node name -> {"queues": [...], "concurrency": n}
    queues: dict[str, tuple[int, float | None]]  # queue -> (waiting jobs, oldest wait in seconds)
    outbox: tuple[int, float | None]
    chain: str
    ipfs: str
    indexer_lag_slots: int | None
    failed_last_hour: list[tuple[str, str, int]] = field(default_factory=list)


def _local_address(host: str) -> str:
    """Where to reach a server bound to ``host`` from this machine (a wildcard bind answers on loopback)."""
    try:
        return "127.0.0.1" if ipaddress.ip_address(host).is_unspecified else host
    except ValueError:  # a host name
        return host


def _api(settings: Settings) -> str:
    url = f"http://{_local_address(settings.api_host)}:{settings.api_port}"
    try:
        response = httpx.get(f"{url}/readyz", timeout=2)
    except httpx.HTTPError as exc:
        return f"down at {url} ({type(exc).__name__})"
    return f"up at {url}" if response.status_code == 200 else f"not ready at {url} ({response.status_code})"


def _workers() -> dict[str, dict[str, Any]]:
    from workers.app import app

    inspector = app.control.inspect(timeout=1.0)
    stats: dict[str, Any] = inspector.stats() or {}
    active_queues: dict[str, Any] = inspector.active_queues() or {}
    return {
        node: {
            "queues": sorted(q["name"] for q in active_queues.get(node, [])),
            "concurrency": (info.get("pool") or {}).get("max-concurrency"),
        }
        for node, info in sorted(stats.items())
    }


def _ipfs(settings: Settings) -> str:
    from roadie.ipfs.client import IpfsNode

    node = IpfsNode(settings.ipfs_api_addr, timeout_s=2, attempts=1)
    try:
        return f"up at {settings.ipfs_api_addr} (version {node.version().get('Version', '?')})"
    except (TransientError, PermanentError) as exc:  # unreachable or refusing: that is the answer
        return f"unreachable at {settings.ipfs_api_addr}: {str(exc).splitlines()[0][:120]}"
    finally:
        node.close()


def gather(settings: Settings) -> Status:
    """Ask every source once; none of them can make this wait more than a few seconds."""
    import asyncio

    from roadie.indexer.runner import status as indexer_status

    with transaction() as session:
        queues: dict[str, tuple[int, float | None]] = {
            row.queue: (int(row.waiting), float(row.oldest_s)) for row in session.execute(QUEUE_DEPTHS)
        }
        count, oldest = session.execute(OUTBOX).one()
        failed = [(str(t), str(c), int(n)) for t, c, n in session.execute(FAILED_LAST_HOUR)]
    indexer = asyncio.run(indexer_status(settings))
    chain = indexer.get("chain_error") or f"up (slot {indexer['chain_slot']})"
    return Status(
        api=_api(settings),
        workers=_workers(),
        queues=queues,
        outbox=(int(count), None if oldest is None else float(oldest)),
        chain=chain,
        ipfs=_ipfs(settings),
        indexer_lag_slots=indexer["lag_slots"],
        failed_last_hour=failed,
    )


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else str(dt.timedelta(seconds=round(seconds)))


def render(status: Status, pools: tuple[str, ...] | list[str]) -> str:
    """One screen: processes, pools with their queues, dependencies, the indexer and recent failures."""
    lines = [f"api      {status.api}"]
    outbox_count, outbox_oldest = status.outbox
    lines.append(f"relay    outbox {outbox_count} due" + (f", oldest {_age(outbox_oldest)}" if outbox_count else ""))
    lines += [f"chain    {status.chain}", f"ipfs     {status.ipfs}"]
    lag = status.indexer_lag_slots
    lines.append(f"indexer  {'lag unknown' if lag is None else f'{lag} slots behind the chain'}")
    lines += ["", f"{'pool':<9} {'workers':<8} {'concurrency':<12} {'waiting':<8} oldest waiting"]
    for pool in pools:
        serving = [w for w in status.workers.values() if pool in w["queues"]]
        concurrency = sum(w["concurrency"] or 0 for w in serving)
        waiting, oldest = status.queues.get(pool, (0, None))
        lines.append(f"{pool:<9} {len(serving) or 'NONE':<8} {concurrency:<12} {waiting:<8} {_age(oldest)}")
    lines += ["", "failed in the last hour:" if status.failed_last_hour else "failed in the last hour: none"]
    lines += [f"  {count:>5}  {job_type}  {code}" for job_type, code, count in status.failed_last_hour]
    return "\n".join(lines)
