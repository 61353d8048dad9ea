"""Small steps the tests share: submitting a job and waiting for it."""

from __future__ import annotations

import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families


def wait_for_job(client: httpx.Client, job_id: str, statuses: set[str] | str, timeout: float = 30) -> dict[str, Any]:
    """Poll the API until the job reaches one of ``statuses``."""
    wanted = {statuses} if isinstance(statuses, str) else statuses
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in wanted:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} stayed {job.get('status')} (wanted {wanted}): {job}")


def submit(client: httpx.Client, payload: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"type": "platform.echo", "payload": payload}, headers=headers)
    assert response.status_code == 202, response.text
    return dict(response.json())


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metric_samples(text: str) -> Samples:
    """A Prometheus text page as {(sample name, labels): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric_value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no {name}{labels}; have {sorted(k for k, _ in samples if k.startswith(name[:12]))}"
    return samples[key]
