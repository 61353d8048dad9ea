"""Small steps the tests share: submitting a job and waiting for it."""

from __future__ import annotations

import os
import time
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


def screenshot(page: Page, name: str) -> Path:
    """The whole page as ``SCREENSHOTS/<name>.png``, after checking it is no taller than a few screens."""
    height = page.evaluate("document.body.scrollHeight")
    path = SCREENSHOTS / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=path, full_page=True)
    assert height <= MAX_PAGE_HEIGHT_PX, f"{name} is {height} px tall (screenshot: {path})"
    return path


def wait_until(condition: Callable[[], Any], timeout: float = 20) -> Any:
    """Poll ``condition`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError(f"{getattr(condition, '__name__', condition)} did not hold within {timeout} s")
