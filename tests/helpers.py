"""Small steps the tests share: submitting a job and waiting for it."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from playwright.sync_api import Page

#: Where the browser tests leave a screenshot of every console page they visit (CI keeps it; git ignores it).
SCREENSHOTS = Path(__file__).resolve().parent.parent / ".roadie" / "screenshots"
MAX_PAGE_HEIGHT_PX = 4000  # a few screens: longer lists scroll inside their own box, large JSON is collapsed
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


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


@contextmanager
def chromium_page() -> Iterator[Page]:
    """A page in the system's headless Chromium (Debian's ``chromium``), driven by Playwright."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/services.sh installs it")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(15_000)
        try:
            yield page
        finally:
            browser.close()


def reload(page: Page) -> None:
    """Reload ``page``; a live page (a running job's) refreshes itself every few seconds, and a reload that
    meets that refresh is aborted by the browser, so it is tried again."""
    from playwright.sync_api import Error

    for attempt in range(3):
        try:
            page.reload()
            return
        except Error as exc:
            if "ERR_ABORTED" not in str(exc) or attempt == 2:
                raise


def screenshot(page: Page, name: str) -> Path:
    """The whole page as ``SCREENSHOTS/<name>.png``, after checking it is no taller than a few screens."""
    height = page.evaluate("document.body.scrollHeight")
    path = SCREENSHOTS / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=path, full_page=True)
    assert height <= MAX_PAGE_HEIGHT_PX, f"{name} is {height} px tall (screenshot: {path})"
    return path


def register_webhook(client: httpx.Client, url: str = "", events: list[str] | None = None) -> dict[str, Any]:
    """A new webhook endpoint of the client (to RECEIVER unless given), with its secret."""
    body = {"url": url or RECEIVER, "events": events or ["job.succeeded", "job.failed"]}
    response = client.post("/v1/webhooks", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


#: A webhook URL that never resolves (.invalid): a delivery to it is tried and recorded, but nothing is posted.
RECEIVER = "https://receiver.invalid/hooks"


def webhook_delivery(
    endpoint_id: str, status: str, *, attempts: int = 0, created_at: dt.datetime | None = None
) -> uuid.UUID:
    """An event and its delivery to the endpoint, as the relay and the webhooks pool leave them."""
    from models.webhooks import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
    from roadie.db import transaction

    with transaction() as session:
        endpoint = session.get(WebhookEndpoint, uuid.UUID(endpoint_id))
        assert endpoint is not None
        event = WebhookEvent(type="job.failed", client_id=endpoint.client_id, data={"job_id": str(uuid.uuid4())})
        session.add(event)
        session.flush()
        row = WebhookDelivery(
            event_id=event.id, endpoint_id=endpoint.id, url=endpoint.url, status=status, attempts=attempts
        )
        if created_at is not None:
            row.created_at = created_at
        session.add(row)
        session.flush()
        for number in range(1, attempts + 1):
            session.add(
                WebhookAttempt(
                    delivery_id=row.id,
                    number=number,
                    started_at=dt.datetime.now(dt.UTC),
                    status_code=500,
                    latency_ms=12 * number,
                    response_excerpt="x" * 2048,
                    error="the receiver answered 500",
                )
            )
        return row.id


def api_healthy(url: str) -> bool:
    """Whether the API at ``url`` answers its liveness probe (a test that starts its own API waits on this)."""
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(condition: Callable[[], Any], timeout: float = 20) -> Any:
    """Poll ``condition`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError(f"{getattr(condition, '__name__', condition)} did not hold within {timeout} s")
