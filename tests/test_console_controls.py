"""The console's queue and schedule controls in headless Chromium: pause and resume a queue and a job type, and
disable, run and enable a schedule; each change shows who made it and lands in the audit table."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import create_key
from tests.helpers import chromium_page, screenshot
from tests.test_admin_console_pages import sign_in


def test_an_admin_pauses_and_resumes_a_queue_and_a_job_type_in_the_console(api_url: str) -> None:
    name = f"ops-{uuid.uuid4().hex[:6]}"
    key = create_key(name, ["admin"])  # before the browser: its driver runs an event loop

    with chromium_page() as page:
        sign_in(page, api_url, key)
        page.click("header a:has-text('Queues')")
        chain = page.locator("#queue-chain")
        assert chain.locator(".status").inner_text() == "running"
        chain.locator("input[name=reason]").fill("RPC provider incident")
        chain.locator("button:has-text('Pause')").click()
        assert f"Queue chain paused by {name}" in page.inner_text(".notice")
        assert chain.locator(".status").inner_text() == "paused"
        assert "RPC provider incident" in chain.inner_text()

        page.select_option("#pause-type select[name=name]", "nft.mint")
        page.click("#pause-type button")
        assert page.locator("#type-nft\\.mint .status").inner_text() == "paused"
        audit = page.inner_text("#audit")
        assert "queue chain" in audit
        assert "type nft.mint" in audit
        screenshot(page, "queues-paused")

        chain.locator("button:has-text('Resume')").click()
        assert chain.locator(".status").inner_text() == "running"
        page.locator("#type-nft\\.mint button:has-text('Resume')").click()
        assert page.locator("#type-nft\\.mint").count() == 0  # a job type is listed only while paused
        assert [row.inner_text().split("\t")[2] for row in page.locator("#audit tbody tr").all()] == [
            "resume",
            "resume",
            "pause",
            "pause",
        ]


def test_an_admin_disables_runs_and_enables_a_schedule_in_the_console(api_url: str) -> None:
    name = f"ops-{uuid.uuid4().hex[:6]}"
    key = create_key(name, ["admin"])

    with chromium_page() as page:
        sign_in(page, api_url, key)
        page.click("header a:has-text('Schedules')")
        rewards = page.locator("#schedule-ledger_rewards")
        assert "1 * * * *" in rewards.inner_text()
        rewards.locator("button:has-text('Disable')").click()
        assert rewards.locator(".status").first.inner_text() == "disabled"
        assert f"by {name}" in rewards.inner_text()
        rewards.locator("button:has-text('Run now')").click()
        assert "will run within a few seconds" in page.inner_text(".notice")
        assert "run requested" in rewards.inner_text()  # no beat runs in this test to take it
        screenshot(page, "schedules")
        rewards.locator("button:has-text('Enable')").click()
        assert rewards.locator(".status").first.inner_text() == "enabled"
        assert page.locator("#audit tbody tr").count() == 3


def test_control_forms_need_the_session_csrf_token(api_url: str) -> None:
    refused = httpx.post(f"{api_url}/admin/queues/pause", data={"kind": "queue", "name": "chain"})
    assert refused.status_code == 403
