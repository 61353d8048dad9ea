"""The admin console at /admin: sign in with an admin key, find a failed job, re-run it, see who did."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from starlette.routing import Route

from api.console import create_console
from api.console_dashboard import Dashboard, dashboard
from models.platform import ApiClient, ConsoleSession, Job, JobAttempt
from models.webhooks import WebhookDelivery
from roadie.db import async_transaction, transaction
from tests.conftest import create_key
from tests.helpers import chromium_page, register_webhook, reload, screenshot, submit, wait_for_job, webhook_delivery


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def console(api_url: str) -> httpx.Client:
    return httpx.Client(base_url=api_url, timeout=15)


def sign_in(browser_like: httpx.Client, key: str) -> httpx.Response:
    token = csrf_token(browser_like.get("/admin/login").text)
    return browser_like.post("/admin/login", data={"key": key, "csrf_token": token})


def test_admin_without_a_session_redirects_to_the_login_page(api_url: str) -> None:
    with console(api_url) as http:
        first = http.get("/admin/", follow_redirects=False)
        landed = http.get("/admin", follow_redirects=True)

    assert first.status_code == 303
    assert first.headers["location"] == "/admin/login"
    assert landed.status_code == 200
    assert landed.url.path == "/admin/login"
    assert 'name="key"' in landed.text


def test_a_key_without_the_admin_scope_cannot_sign_in(api_url: str) -> None:
    key = create_key(f"web-{uuid.uuid4().hex[:6]}", ["jobs:write", "jobs:read"])

    with console(api_url) as http:
        refused = sign_in(http, key)
        after = http.get("/admin/", follow_redirects=False)
        unknown = sign_in(http, "rk_live_not-a-key")

    assert refused.status_code == 403
    assert "lacks the admin scope" in refused.text
    assert after.status_code == 303
    assert after.headers["location"] == "/admin/login"
    assert unknown.status_code == 401
    assert "Unknown or revoked API key" in unknown.text


def test_the_session_cookie_holds_a_session_id_stored_only_as_its_hash_and_never_the_key(api_url: str) -> None:
    key = create_key(f"ops-{uuid.uuid4().hex[:6]}", ["admin"])

    with console(api_url) as http:
        response = sign_in(http, key)
        page = http.get("/admin/")

    assert response.status_code == 303
    assert page.status_code == 200
    set_cookie = response.headers["set-cookie"]
    assert set_cookie.startswith("roadie_admin=")
    assert "httponly" in set_cookie.lower()
    assert "samesite=strict" in set_cookie.lower()
    assert "path=/admin" in set_cookie.lower()
    payload = set_cookie.split("=", 1)[1].split(";", 1)[0].split(".", 1)[0]
    session = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))
    assert set(session) == {"sid", "csrf"}
    assert key not in set_cookie
    with transaction() as db:
        stored = db.scalars(select(ConsoleSession.id_hash)).all()
    assert stored == [hashlib.sha256(session["sid"].encode()).hexdigest()]


def cookie_of(http: httpx.Client) -> dict[str, str]:
    return {"roadie_admin": http.cookies["roadie_admin"]}


def signed_in_copy(api_url: str, cookie: dict[str, str]) -> httpx.Response:
    """The job list as another browser holding a copy of the cookie sees it."""
    with httpx.Client(base_url=api_url, timeout=15, cookies=cookie) as thief:
        return thief.get("/admin/", follow_redirects=False)


def test_signing_out_ends_the_session_for_every_copy_of_the_cookie(api_url: str) -> None:
    key = create_key(f"ops-{uuid.uuid4().hex[:6]}", ["admin"])

    with console(api_url) as http:
        sign_in(http, key)
        captured = cookie_of(http)
        before = signed_in_copy(api_url, captured)
        logout = http.post("/admin/logout", data={"csrf_token": csrf_token(http.get("/admin/").text)})
        own = http.get("/admin/", follow_redirects=False)
    after = signed_in_copy(api_url, captured)

    assert before.status_code == 200
    assert logout.status_code == 303
    assert own.status_code == 303
    assert after.status_code == 303
    assert after.headers["location"] == "/admin/login"
    with transaction() as db:
        assert db.scalar(select(func.count()).select_from(ConsoleSession)) == 0


def test_revoking_the_key_or_the_session_expiring_ends_the_session_at_once(api_url: str) -> None:
    revoked_name, expired_name = (f"ops-{uuid.uuid4().hex[:6]}" for _ in range(2))
    cookies = {}
    for name in (revoked_name, expired_name):
        with console(api_url) as http:
            sign_in(http, create_key(name, ["admin"]))
            assert http.get("/admin/", follow_redirects=False).status_code == 200
            cookies[name] = cookie_of(http)

    with transaction() as db:
        db.execute(update(ApiClient).where(ApiClient.name == revoked_name).values(revoked_at=func.now()))
        expired = select(ApiClient.id).where(ApiClient.name == expired_name).scalar_subquery()
        db.execute(update(ConsoleSession).where(ConsoleSession.client_id == expired).values(expires_at=func.now()))

    for name in (revoked_name, expired_name):
        refused = signed_in_copy(api_url, cookies[name])
        assert refused.status_code == 303, name
        assert refused.headers["location"] == "/admin/login"


#: Form fields besides the CSRF token that make each console form do its work; a new form needs a line here.
FORM_FIELDS: dict[str, Callable[[str], dict[str, str]]] = {
    "console.login_submit": lambda key: {"key": key},
    "console.logout": lambda key: {},
    "console.retry_matching": lambda key: {"error_code": "echo_permanent"},
    "console.retry_one": lambda key: {},
    "console.pause": lambda key: {"kind": "queue", "name": "media"},
    "console.resume": lambda key: {"kind": "queue", "name": "media"},
    "console.drive_schedule": lambda key: {"name": "ledger_check"},  # the action (path) is disable
    "console.resend_delivery": lambda key: {},
    "console.resend_failed": lambda key: {"since": "2000-01-01T00:00:00", "until": "2100-01-01T00:00:00"},
}


def console_forms() -> list[Route]:
    """Every route of the console that takes a POST, from its router: a form added later is tested too."""
    routes = [
        route for route in create_console().routes if isinstance(route, Route) and "POST" in (route.methods or ())
    ]
    assert {route.name for route in routes} == set(FORM_FIELDS), "a console form without a CSRF test case"
    return routes


@pytest.mark.usefixtures("worker")
def test_every_console_form_refuses_a_post_without_the_sessions_csrf_token(
    api_url: str, client: httpx.Client, make_client: Callable[..., httpx.Client]
) -> None:
    failed = wait_for_job(client, submit(client, {"fail": "permanent", "fail_times": 1})["id"], "failed")["id"]
    endpoint_id = str(register_webhook(make_client("webhooks:write"))["id"])
    failed_delivery = webhook_delivery(endpoint_id, "failed", attempts=1)
    webhook_delivery(endpoint_id, "failed", attempts=1)
    params = {"job_id": failed, "action": "disable", "endpoint_id": endpoint_id, "delivery_id": str(failed_delivery)}

    for route in console_forms():
        key = create_key(f"ops-{uuid.uuid4().hex[:6]}", ["admin"])
        url = route.url_path_for(route.name, **{name: params[name] for name in route.param_convertors})
        fields = FORM_FIELDS[route.name](key)
        with console(api_url) as stranger:
            foreign = csrf_token(stranger.get("/admin/login").text)  # valid, but another browser's session
        with console(api_url) as http:
            if route.name == "console.login_submit":
                token = csrf_token(http.get("/admin/login").text)
            else:
                assert sign_in(http, key).status_code == 303
                token = csrf_token(http.get("/admin/").text)
            missing = http.post(f"/admin{url}", data=fields)
            wrong = http.post(f"/admin{url}", data=fields | {"csrf_token": "x" * len(token)})
            other_session = http.post(f"/admin{url}", data=fields | {"csrf_token": foreign})
            right = http.post(f"/admin{url}", data=fields | {"csrf_token": token})

        for refused in (missing, wrong, other_session):
            assert refused.status_code == 403, (route.name, refused.text)
            assert "Form refused" in refused.text
        assert right.status_code == 303, (route.name, right.text)
    assert client.get(f"/v1/jobs/{failed}").json()["reruns"], "the re-run forms did their work"
    with transaction() as db:
        jobs = db.scalars(select(WebhookDelivery.job_id).where(WebhookDelivery.endpoint_id == uuid.UUID(endpoint_id)))
        assert None not in list(jobs), "the re-send forms did their work: each delivery has a new job"


@pytest.mark.usefixtures("worker")
def test_an_operator_retries_a_failed_job_from_the_browser(api_url: str, client: httpx.Client) -> None:
    job_id = wait_for_job(client, submit(client, {"fail": "permanent", "fail_times": 1})["id"], "failed")["id"]
    operator = f"ops-{uuid.uuid4().hex[:6]}"
    key = create_key(operator, ["admin"])

    with chromium_page() as page:
        page.goto(f"{api_url}/admin")
        assert page.url.endswith("/admin/login")
        page.fill("input[name=key]", key)
        page.click("button:has-text('Sign in')")
        page.wait_for_url(re.compile(r"/admin/$"))
        assert operator in page.inner_text("header")

        page.fill("input[name=error_code]", "echo_permanent")
        page.click("button:has-text('Filter')")
        page.wait_for_url(re.compile(r"error_code=echo_permanent"))
        assert "1 matching job" in page.inner_text("main")
        page.click(f"a[href='/admin/jobs/{job_id}']")
        page.wait_for_url(re.compile(rf"/admin/jobs/{job_id}$"))
        assert page.inner_text("#job-status") == "failed"
        assert '"fail": "permanent"' in page.inner_text("#payload")
        assert "PermanentError" in (page.text_content("pre.traceback") or "")

        page.click("button:has-text('Retry this job')")
        page.wait_for_url(re.compile(rf"/admin/jobs/{job_id}$"))
        assert f"Re-run queued by {operator}" in page.inner_text("[role=status]")
        deadline = time.monotonic() + 30
        while page.inner_text("#job-status") != "succeeded" and time.monotonic() < deadline:
            time.sleep(0.3)
            reload(page)
        screenshot(page, "job-rerun")
        assert page.inner_text("#job-status") == "succeeded"
        assert page.inner_text("#reruns .rerun-by") == operator
        assert page.locator("#attempts tbody tr").count() == 2

    job = client.get(f"/v1/jobs/{job_id}").json()
    (rerun,) = job["reruns"]
    assert rerun["by"] == operator
    assert rerun["previous_status"] == "failed"
    assert rerun["forced"] is False


def test_bad_filters_and_unknown_jobs_get_pages_not_server_errors(api_url: str) -> None:
    key = create_key(f"ops-{uuid.uuid4().hex[:6]}", ["admin"])

    with console(api_url) as http:
        sign_in(http, key)
        bad_time = http.get("/admin/", params={"created_after": "yesterday"})
        bad_cursor = http.get("/admin/", params={"cursor": "nope"})
        not_a_uuid = http.get("/admin/jobs/nope")
        unknown = http.get(f"/admin/jobs/{uuid.uuid4()}")

    assert bad_time.status_code == 400
    assert "created_after" in bad_time.text
    assert bad_cursor.status_code == 400
    assert not_a_uuid.status_code == 404
    assert unknown.status_code == 404
    assert "text/html" in unknown.headers["content-type"]


@pytest.mark.usefixtures("worker")
def test_retry_all_matching_with_no_filter_needs_every_failed_job_ticked(api_url: str, client: httpx.Client) -> None:
    failed = wait_for_job(client, submit(client, {"fail": "permanent", "fail_times": 1})["id"], "failed")["id"]
    key = create_key(f"ops-{uuid.uuid4().hex[:6]}", ["admin"])

    with console(api_url) as http:
        sign_in(http, key)
        listing = http.get("/admin/")
        token = csrf_token(listing.text)
        unticked = http.post("/admin/jobs/retry", data={"csrf_token": token})
        refused_page = http.get(unticked.headers["location"])
        untouched = client.get(f"/v1/jobs/{failed}").json()["reruns"]
        ticked = http.post("/admin/jobs/retry", data={"csrf_token": token, "all": "true"})

    assert 'name="all" value="true" required' in listing.text
    assert unticked.status_code == 303
    assert "Nothing re-run: with no filter" in refused_page.text
    assert untouched == []
    assert ticked.status_code == 303
    assert wait_for_job(client, failed, "succeeded")["reruns"]


@pytest.mark.usefixtures("worker")
def test_retry_all_matching_and_forced_retries_are_recorded_under_the_operator(
    api_url: str, client: httpx.Client
) -> None:
    flaky = [submit(client, {"fail": "permanent", "fail_times": 1, "n": n})["id"] for n in range(2)]
    done = submit(client, {"ok": True})["id"]
    for job_id in flaky:
        wait_for_job(client, job_id, "failed")
    wait_for_job(client, done, "succeeded")
    operator = f"ops-{uuid.uuid4().hex[:6]}"
    key = create_key(operator, ["admin"])

    with console(api_url) as http:
        sign_in(http, key)
        listing = http.get("/admin/", params={"error_code": "echo_permanent"})
        token = csrf_token(listing.text)
        bulk = http.post("/admin/jobs/retry", data={"csrf_token": token, "error_code": "echo_permanent"})
        after_bulk = http.get(bulk.headers["location"])
        unforced = http.post(f"/admin/jobs/{done}/retry", data={"csrf_token": token})
        refused_page = http.get(unforced.headers["location"])
        forced = http.post(f"/admin/jobs/{done}/retry", data={"csrf_token": token, "force": "on"})

    assert "Retry all 2 failed jobs matching this filter" in listing.text
    assert bulk.status_code == 303
    assert bulk.headers["location"] == "/admin/?error_code=echo_permanent"
    assert f"Re-ran 2 failed jobs matching the filter, as {operator}." in after_bulk.text
    for job_id in flaky:
        (rerun,) = wait_for_job(client, job_id, "succeeded")["reruns"]
        assert rerun["by"] == operator
    assert unforced.status_code == 303
    assert "tick “force”" in refused_page.text
    assert forced.status_code == 303
    job = wait_for_job(client, done, "succeeded")
    (rerun,) = job["reruns"]
    assert (rerun["by"], rerun["forced"]) == (operator, True)


def test_the_dashboard_rebuilds_each_queues_last_hour_from_the_ledger() -> None:
    queue = f"test-{uuid.uuid4().hex[:6]}"  # no worker consumes it: its jobs stay where they are put

    def minutes_ago(n: int) -> Any:
        return func.now() - dt.timedelta(minutes=n)

    with transaction() as db:
        still_queued = Job(type="platform.echo", queue=queue, payload={}, max_attempts=1, created_at=minutes_ago(5))
        ran = Job(
            type="platform.echo", queue=queue, payload={}, max_attempts=1, status="succeeded", attempts=1,
            run_attempts=1, created_at=minutes_ago(20), started_at=minutes_ago(8), finished_at=minutes_ago(7),
        )  # fmt: skip
        db.add_all([still_queued, ran])
        db.flush()
        db.add(
            JobAttempt(
                job_id=ran.id, number=1, lease_id=uuid.uuid4(), worker="w@test", outcome="succeeded",
                started_at=minutes_ago(8), finished_at=minutes_ago(7),
            )
        )  # fmt: skip

    async def read() -> Dashboard:
        async with async_transaction() as session:
            return await dashboard(session)

    board = asyncio.run(read())
    assert board.charts is not None
    outcomes, depth, oldest = (drawing.chart.series for drawing in board.charts)

    def at(ago: int) -> int:
        """The index of the sample taken ``ago`` minutes before now."""
        return 60 - ago

    assert outcomes["succeeded"][59 - 7] == 1
    assert sum(map(sum, outcomes.values())) == 1
    assert [depth[queue][at(ago)] for ago in (0, 4, 6, 10, 15, 25)] == [1, 1, 0, 1, 1, 0]
    assert oldest[queue][at(0)] == pytest.approx(300, abs=10)
    assert oldest[queue][at(10)] == pytest.approx(600, abs=10)
    assert oldest[queue][at(15)] == pytest.approx(300, abs=10)
    assert set(board.now) >= {"media", "default"}  # the gauges know only the platform's queues
