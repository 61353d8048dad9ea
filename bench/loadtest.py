"""Load test: the intake driven at a fixed rate against the whole local process set (`roadie up`).

``python -m bench.loadtest [--rate 40] [--seconds 180]`` starts the platform as `roadie up` does (the
API, the outbox relay, one Celery worker per pool, beat, and the embedded IPFS node and local chain)
on a scratch database and broker, then sends ``POST /v1/jobs`` open loop: request *i* leaves at
``start + i / rate`` whether or not earlier ones have answered, so a slow server shows up as latency
instead of a lower offered rate. The mix holds fast, slow, retried-once and failing echo jobs,
ledger invariant checks, and some requests that repeat an earlier Idempotency-Key; beside them,
every ``--upload-every`` seconds a generated 8-second track is sent to ``POST /v1/tracks`` with
minting asked, so the media, ipfs and chain pools work under the same load.

Once the load stops it waits for every accepted job to settle, then checks the ledger:

- lost: an accepted job missing from the ledger, or unsettled once no job has finished for ``--stall`` s;
- duplicated: a replayed key that answered with another job, more than one job row for a key, or a
  job that ran more often than its kind allows (a fast job run twice is a duplicate execution);
- wrong outcome: a job that settled other than its kind expects.

It prints HTTP and end-to-end (created → finished, from the ledger) latency percentiles per kind.
Exit status 1 when anything was lost, duplicated or wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import Bench, create_api_key, database_connection, free_port, run_main, sql_count

TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Kind:
    """One kind of job in the mix: its payload, its share, and how it must end."""

    name: str
    weight: float
    payload: dict[str, Any]
    outcome: str
    attempts: int  # at most; a pipeline parent runs once more after each stage it waits for
    job_type: str = "platform.echo"


MIX: tuple[Kind, ...] = (
    Kind("fast", 70, {}, "succeeded", 1),
    Kind("slow-250ms", 15, {"sleep_ms": 250}, "succeeded", 1),
    Kind("retried-once", 8, {"fail": "transient", "fail_times": 1}, "succeeded", 2),
    Kind("fails", 5, {"fail": "permanent"}, "failed", 1),
    Kind("large-8KiB", 2, {"blob": "x" * 8192}, "succeeded", 1),
    Kind("ledger-check", 3, {}, "succeeded", 1, "ledger.check"),
)
UPLOAD = Kind("track+mint", 0, {}, "succeeded", 12, "track.ingest")
REPLAY_SHARE = 0.03  # of requests that resend an earlier request (same key, same body)


@dataclass
class Sent:
    kind: Kind
    key: str
    body: dict[str, Any]
    job_id: str | None = None


@dataclass
class Results:
    accepted: dict[str, Sent] = field(default_factory=dict)  # job id -> what was sent
    http_latency: dict[str, list[float]] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    replays: int = 0
    replay_mismatches: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


async def send(request: Coroutine[Any, Any, httpx.Response], sent: Sent, results: Results, *, replay: bool) -> None:
    """Await one request and record its answer: a new job, a replay of ``sent``'s job, or an error."""
    started = time.perf_counter()
    try:
        response = await request
    except httpx.HTTPError as exc:
        results.errors[type(exc).__name__] += 1
        return
    results.statuses[str(response.status_code)] += 1
    if response.status_code != 202:
        results.errors[f"HTTP {response.status_code} ({sent.kind.name})"] += 1
        return
    results.http_latency.setdefault(sent.kind.name, []).append(time.perf_counter() - started)
    job_id = str(response.json()["id"])
    if not replay:
        sent.job_id = job_id
        results.accepted[job_id] = sent
        return
    results.replays += 1
    if sent.job_id is not None and job_id != sent.job_id:
        results.replay_mismatches.append(f"key {sent.key}: {sent.job_id} then {job_id}")


def post(client: httpx.AsyncClient, sent: Sent) -> Coroutine[Any, Any, httpx.Response]:
    return client.post("/v1/jobs", json=sent.body, headers={"Idempotency-Key": sent.key})


async def _at(moment: float, work: Coroutine[Any, Any, None]) -> None:
    await asyncio.sleep(max(0.0, moment - time.perf_counter()))
    await work


def sample_track(folder: Path) -> bytes:
    """8 seconds of a generated chord as FLAC: what every upload of the run sends."""
    from roadie.media import ffmpeg

    audio = folder / "load.flac"
    tones = [arg for hz in (220, 277.18, 329.63) for arg in ("-f", "lavfi", "-i", f"sine=frequency={hz}:duration=8")]
    command = [ffmpeg.tools().ffmpeg, "-hide_banner", "-loglevel", "error", "-y", *tones]
    subprocess.run([*command, "-filter_complex", "amix=inputs=3", "-ac", "2", str(audio)], check=True)
    return audio.read_bytes()


async def upload(client: httpx.AsyncClient, audio: bytes, n: int, results: Results) -> None:
    """One track upload with minting asked; its ``track.ingest`` job joins the checked jobs."""
    from solders.keypair import Keypair

    sent = Sent(UPLOAD, f"load-track-{uuid.uuid4()}", {})
    metadata = {"title": f"Load {n}", "artist_wallet": str(Keypair().pubkey()), "mint": True}
    files: dict[str, tuple[str | None, bytes | str, str]] = {
        "metadata": (None, json.dumps(metadata), "application/json"),
        "audio": ("load.flac", audio, "application/octet-stream"),
    }
    request = client.post("/v1/tracks", files=files, headers={"Idempotency-Key": sent.key})
    await send(request, sent, results, replay=False)


async def drive(
    base_url: str, api_key: str, rate: float, seconds: float, seed: int, upload_every: float, audio: bytes
) -> Results:
    """Send ``rate * seconds`` requests open loop; return what the API answered."""
    rng = random.Random(seed)
    results = Results()
    history: list[Sent] = []
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=30) as client:
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        if upload_every > 0:
            for n in range(int(seconds / upload_every)):
                at = start + n * upload_every
                tasks.append(asyncio.create_task(_at(at, upload(client, audio, n, results))))
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            replayable = [s for s in history if s.job_id is not None]
            if replayable and rng.random() < REPLAY_SHARE:
                again = rng.choice(replayable)
                tasks.append(asyncio.create_task(send(post(client, again), again, results, replay=True)))
                continue
            kind = rng.choices(MIX, weights=[k.weight for k in MIX])[0]
            payload = {"n": i, **kind.payload} if kind.job_type == "platform.echo" else kind.payload
            body = {"type": kind.job_type, "payload": payload}
            sent = Sent(kind, f"load-{uuid.uuid4()}", body)
            history.append(sent)
            tasks.append(asyncio.create_task(send(post(client, sent), sent, results, replay=False)))
        await asyncio.gather(*tasks)
        offered = time.perf_counter() - start
    print(f"offered {len(tasks)} requests in {offered:.1f}s ({len(tasks) / offered:.1f}/s, uploads included)")
    return results


def settle(job_ids: Sequence[str], stall_s: float) -> dict[str, tuple[Any, ...]]:
    """Wait while jobs keep finishing, until all are terminal or none has finished for ``stall_s``.

    A backlog that drains slowly is not a loss; a job still unsettled after the platform stopped
    making progress is.
    """
    query = (
        "SELECT j.id::text, j.status, j.attempts, "
        "EXTRACT(EPOCH FROM j.finished_at - j.created_at), "
        "(SELECT count(*) FROM job_attempts a WHERE a.job_id = j.id AND a.outcome = 'succeeded') "
        "FROM jobs j WHERE j.id = ANY(%s::uuid[])"
    )
    started, last_progress, settled_before = time.monotonic(), time.monotonic(), -1
    with database_connection() as connection:
        while True:
            rows = {str(row[0]): tuple(row) for row in connection.execute(query, (list(job_ids),)).fetchall()}
            settled = sum(1 for row in rows.values() if row[1] in TERMINAL)
            if settled > settled_before:
                settled_before, last_progress = settled, time.monotonic()
            if settled == len(job_ids) or time.monotonic() - last_progress > stall_s:
                print(f"{settled} of {len(job_ids)} jobs settled {time.monotonic() - started:.0f}s after the load")
                return rows
            time.sleep(1)


def percentiles(values: Sequence[float]) -> str:
    if len(values) < 2:
        return "n/a"
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return f"{cuts[49] * 1000:8.0f} {cuts[98] * 1000:8.0f}"


def report(results: Results, rows: dict[str, tuple[Any, ...]], seconds: float) -> int:
    lost = [job_id for job_id in results.accepted if job_id not in rows or rows[job_id][1] not in TERMINAL]
    ran_twice, wrong = [], []
    end_to_end: dict[str, list[float]] = {}
    for job_id, sent in results.accepted.items():
        row = rows.get(job_id)
        if row is None or row[1] not in TERMINAL:
            continue
        _, status, attempts, e2e_s, succeeded_runs = row
        if succeeded_runs > 1 or attempts > sent.kind.attempts:
            ran_twice.append(f"{job_id} ({sent.kind.name}: {attempts} attempts, {succeeded_runs} successes)")
        if status != sent.kind.outcome:
            wrong.append(f"{job_id} ({sent.kind.name}: {status})")
        end_to_end.setdefault(sent.kind.name, []).append(float(e2e_s))
    with database_connection() as connection:
        keyed_twice = sql_count(
            connection,
            "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE idempotency_key IS NOT NULL "
            "GROUP BY client_id, idempotency_key HAVING count(*) > 1) d",
        )
    duplicates = len(ran_twice) + len(results.replay_mismatches) + keyed_twice

    completed = sum(1 for row in rows.values() if row[1] in TERMINAL)
    print(f"\naccepted {len(results.accepted)} new jobs ({len(results.accepted) / seconds:.1f}/s) "
          f"and {results.replays} replays; completed {completed}")  # fmt: skip
    print(f"HTTP statuses {dict(results.statuses)}; errors {dict(results.errors) or 'none'}")
    print(f"\n{'kind':14} {'jobs':>6} {'HTTP p50':>8} {'p99 ms':>8} {'e2e p50':>8} {'p99 ms':>8}")
    everything: list[float] = []
    for kind in (*MIX, UPLOAD):
        e2e = end_to_end.get(kind.name, [])
        everything += e2e
        print(f"{kind.name:14} {len(e2e):6} {percentiles(results.http_latency.get(kind.name, []))} {percentiles(e2e)}")
    http_all = [x for values in results.http_latency.values() for x in values]
    print(f"{'all':14} {len(everything):6} {percentiles(http_all)} {percentiles(everything)}")
    print(f"\nlost: {len(lost)}  duplicated: {duplicates}  wrong outcome: {len(wrong)}")
    for line in (lost + ran_twice + results.replay_mismatches + wrong)[:20]:
        print(f"  {line}")
    return 1 if lost or duplicates or wrong else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second offered")
    parser.add_argument("--seconds", type=float, default=180.0, help="how long to offer load")
    parser.add_argument("--stall", type=float, default=60.0, help="give up when no job finished for this long")
    parser.add_argument("--seed", type=int, default=1, help="seed of the mix")
    parser.add_argument("--upload-every", type=float, default=6.0, help="seconds between track uploads; 0: none")
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="roadie-loadtest-")
    os.environ.update({"ROADIE_API_PORT": str(free_port()), "ROADIE_HOME": home, "ROADIE_WORKER_METRICS_PORT": "0"})
    for name in [n for n in os.environ if n.startswith("ROADIE_FLOWER_")]:
        del os.environ[name]  # Flower is not part of what is measured
    with Bench():
        from roadie.supervisor import running_platform

        with running_platform() as platform:
            print(f"platform up: {', '.join(platform.processes)}; offering {args.rate:g}/s for {args.seconds:g}s")
            key = create_api_key(("jobs:write", "jobs:read", "jobs:rehearse", "tracks:write"))
            audio = sample_track(Path(home))
            results = asyncio.run(
                drive(platform.base_url, key, args.rate, args.seconds, args.seed, args.upload_every, audio)
            )
            rows = settle(list(results.accepted), args.stall)
            return report(results, rows, args.seconds)


if __name__ == "__main__":
    run_main(main)
