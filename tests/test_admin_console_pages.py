"""The console's pictures in headless Chromium: a track ingest's pipeline, waveform and analysis, the dashboard.

Every page the browser visits is screenshotted into ``.roadie/screenshots/`` and must be at most a few
screens tall, including a job with a huge result. Pages for what is missing (a job type without a
pipeline, a track without a waveform, a deleted track) still render, saying what is known.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import Page
from sqlalchemy import delete, update

from api.console_job import RAW_JSON_CHARS
from models.music import Track
from models.webhooks import WebhookEndpoint
from roadie.db import transaction
from tests.conftest import create_key
from tests.fixtures.media import AudioFiles, post_track
from tests.helpers import chromium_page, register_webhook, reload, screenshot, submit, wait_for_job, webhook_delivery

pytestmark = pytest.mark.usefixtures("worker", "ipfs_node")
STAGES = ["transcode", "cover", "analysis", "pin_track", "pin_metadata"]
JOB_LINK = re.compile(r"^/admin/jobs/[0-9a-f-]{36}$")


def sign_in(page: Page, api_url: str, key: str) -> None:
    page.goto(f"{api_url}/admin/login")
    page.fill("input[name=key]", key)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(re.compile(r"/admin/$"))


def reload_until(page: Page, done: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"{page.url} never showed what was awaited: {page.inner_text('main')}"
        time.sleep(0.2)
        reload(page)


@pytest.mark.timeout(600)  # a whole ingest, watched in a browser, on a machine that may be busy
def test_a_track_ingest_job_shows_its_pipeline_waveform_and_analysis(
    api_url: str, make_client: Callable[..., httpx.Client], audio: AudioFiles
) -> None:
    uploader = make_client("tracks:write", "jobs:read")
    upload = post_track(uploader, audio.song("console.flac", seconds=30))
    assert upload.status_code == 202, upload.text
    job_id, track_id = upload.json()["id"], upload.json()["track_id"]

    key = create_key(f"ops-{uuid.uuid4().hex[:6]}", ["admin"])  # before the browser: its driver runs an event loop

    with chromium_page() as page:
        sign_in(page, api_url, key)
        page.goto(f"{api_url}/admin/jobs/{job_id}")
        reload_until(page, lambda: page.locator(".stage.running").count() > 0)
        meter = page.locator(".stage.running .meter .fill").first
        assert meter.evaluate("e => getComputedStyle(e).animationName") == "march"
        screenshot(page, "track-ingest-running")

        wait_for_job(uploader, job_id, "succeeded", timeout=300)
        reload(page)
        assert [s.get_attribute("id") for s in page.locator(".stage").all()] == [f"stage-{n}" for n in STAGES]
        for name in STAGES:
            stage = page.locator(f"#stage-{name}")
            assert stage.locator(".status").inner_text() == "succeeded"
            assert JOB_LINK.match(stage.locator("a").get_attribute("href") or "")
            assert re.fullmatch(r"\d+(\.\d)? m?s|\d+ min \d\d s", stage.locator(".duration").inner_text())
        assert page.locator("#waveform svg polygon").count() == 1
        analysis = page.inner_text("#analysis")
        for unit in ("BPM", "LUFS", "dBTP"):
            assert unit in analysis
        assert "C major" in analysis
        assert page.locator("details#result-raw").get_attribute("open") is None
        screenshot(page, "track-ingest")

        page.goto(api_url + (page.get_attribute("#stage-analysis a", "href") or ""))
        assert page.locator("#pipeline").count() == 0  # a stage's own job has no pipeline, but the same track
        assert page.locator("#waveform svg").count() == 1
        assert page.locator("details#result-raw").get_attribute("open") is None  # 1,000 waveform pairs
        screenshot(page, "track-analysis-stage")

        with transaction() as session:
            session.execute(update(Track).where(Track.id == uuid.UUID(track_id)).values(waveform=None))
        page.goto(f"{api_url}/admin/jobs/{job_id}")
        assert "No waveform yet" in page.inner_text("#no-waveform")
        assert "BPM" in page.inner_text("#analysis")
        screenshot(page, "track-ingest-no-waveform")

        with transaction() as session:
            session.execute(delete(Track).where(Track.id == uuid.UUID(track_id)))
        reload(page)
        assert "was deleted" in page.inner_text("#track-deleted")
        assert page.locator(".stage").count() == len(STAGES)
        screenshot(page, "track-ingest-deleted-track")


@pytest.mark.usefixtures("worker")
def test_a_huge_result_is_collapsed_and_cut_and_a_failed_job_shows_both_attempts(
    api_url: str, client: httpx.Client
) -> None:
    rows = [{"n": n, "text": "the quick brown fox jumps over the lazy dog " * 3} for n in range(5000)]
    huge = submit(client, {"rows": rows})["id"]
    failing = submit(client, {"fail": "permanent", "fail_times": 2})["id"]
    wait_for_job(client, huge, "succeeded")
    wait_for_job(client, failing, "failed")

    key = create_key(f"ops-{uuid.uuid4().hex[:6]}", ["admin"])  # before the browser: its driver runs an event loop

    with chromium_page() as page:
        sign_in(page, api_url, key)
        page.goto(f"{api_url}/admin/jobs/{huge}")
        assert page.locator("details#result-raw").get_attribute("open") is None
        assert f"Showing the first {RAW_JSON_CHARS} of" in (page.text_content("#result-raw") or "")
        assert page.locator("#pipeline").count() == 0  # platform.echo has no pipeline
        assert page.locator("#track-deleted, #waveform").count() == 0
        screenshot(page, "job-huge-result")
        page.click("details#result-raw summary")
        assert page.locator("#result").is_visible()

        page.goto(f"{api_url}/admin/jobs/{failing}")
        page.click("button:has-text('Retry this job')")
        reload_until(page, lambda: "failure on attempt 2" in page.inner_text("#current-attempt"))
        current, previous = page.inner_text("#current-attempt"), page.inner_text("#previous-error")
        assert current.startswith("#2 failed")
        assert "echo_permanent" in current
        assert previous.startswith("#1 failed")
        assert "failure on attempt 1" in previous
        screenshot(page, "job-failed-twice")

        page.goto(f"{api_url}/admin/dashboard")
        assert page.locator("svg.chart").count() == 3
        assert page.locator("#outcomes rect").count() >= 1  # the attempts above ended within the hour
        assert "succeeded" in page.inner_text("#outcomes .legend")
        assert page.locator("#queues-now tbody tr").count() >= 1
        screenshot(page, "dashboard")


def test_an_operator_sees_webhook_endpoints_and_their_attempts_and_re_sends_deliveries(
    api_url: str, make_client: Callable[..., httpx.Client]
) -> None:
    app = make_client("webhooks:write", name=f"label-{uuid.uuid4().hex[:6]}")
    endpoint_id = str(register_webhook(app)["id"])
    gone_id = str(register_webhook(app, "https://gone.invalid/h", ["track.ready"])["id"])
    with transaction() as session:
        session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == uuid.UUID(gone_id))
            .values(enabled=False, disabled_reason="the receiver answered 410 Gone")
        )
    hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    failed = [webhook_delivery(endpoint_id, "failed", attempts=3, created_at=hour_ago) for _ in range(2)]
    webhook_delivery(endpoint_id, "delivered", attempts=1)
    key = create_key(f"ops-{uuid.uuid4().hex[:6]}", ["admin"])  # before the browser: its driver runs an event loop

    with chromium_page() as page:
        sign_in(page, api_url, key)
        page.click("header a:has-text('Webhooks')")
        assert "the receiver answered 410 Gone" in page.inner_text(f"#endpoint-{gone_id}")
        assert page.inner_text(f"#endpoint-{endpoint_id} td:nth-child(7)") == "2"  # failed deliveries
        screenshot(page, "webhooks")

        page.click(f"#endpoint-{endpoint_id} a")
        page.wait_for_url(f"**/admin/webhooks/{endpoint_id}")
        assert page.locator("#deliveries tr.delivery").count() == 3
        attempts = page.locator(f"#attempts-{failed[0]}")
        attempts.locator("summary").click()
        assert attempts.locator("tbody tr").count() == 3
        assert "the receiver answered 500" in attempts.inner_text()
        screenshot(page, "webhook-deliveries")

        page.locator(f"#delivery-{failed[0]} button:has-text('Re-send')").click()
        assert "re-sent by ops-" in page.inner_text("[role=status]")
        assert page.inner_text(f"#delivery-{failed[0]} .status") == "pending"
        page.click("#resend-failed button")
        assert "Re-sent 1 failed delivery" in page.inner_text("[role=status]")
        assert page.inner_text(f"#delivery-{failed[1]} .status") == "pending"
        screenshot(page, "webhook-resent")

        page.goto(f"{api_url}/admin/webhooks/{gone_id}")
        assert "410 Gone" in page.inner_text("#disabled-reason")
        assert page.locator("#resend-failed").count() == 0
