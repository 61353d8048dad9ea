"""``/v1/webhooks``: endpoints a client registers, their secrets, their deliveries and re-sending them.

Deliveries are written here as the relay writes them (an event, then a delivery with its attempts),
to a receiver that does not resolve: what is under test is what the API shows and does, not the
POST (the end-to-end delivery tests cover that, with a real receiver).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook

from models.platform import Job
from models.webhooks import WebhookDelivery, WebhookEndpoint
from roadie.cli import main
from roadie.db import transaction
from roadie.webhooks.delivery import Pending, load, signed_headers
from tests.conftest import Processes
from tests.helpers import RECEIVER, metric_samples, metric_value, register_webhook, webhook_delivery

Clients = Callable[..., httpx.Client]


@pytest.fixture
def app(make_client: Clients) -> httpx.Client:
    """An upstream app that manages its own webhook endpoints."""
    return make_client("webhooks:write", "webhooks:read")


def error_fields(response: httpx.Response) -> list[str]:
    return [field["field"] for field in response.json()["error"]["fields"]]


def test_an_endpoint_is_created_with_its_secret_shown_once_and_stored_only_sealed(app: httpx.Client) -> None:
    answer = app.post("/v1/webhooks", json={"url": RECEIVER, "events": ["job.succeeded", "job.failed"]})
    created = answer.json()

    assert answer.status_code == 201, answer.text
    assert answer.headers["location"] == f"{app.base_url}/v1/webhooks/{created['id']}"
    assert str(created["secret"]).startswith("whsec_")
    assert created["enabled"] is True
    assert created["events"] == ["job.succeeded", "job.failed"]
    shown = app.get(f"/v1/webhooks/{created['id']}")
    listed = app.get("/v1/webhooks")
    assert shown.status_code == listed.status_code == 200
    assert "secret" not in shown.json()
    assert [e["id"] for e in listed.json()["endpoints"]] == [created["id"]]
    for answer in (shown, listed):
        assert str(created["secret"]) not in answer.text
    with transaction() as session:
        stored = session.get(WebhookEndpoint, uuid.UUID(str(created["id"])))
    assert stored is not None
    assert str(created["secret"]).encode() not in bytes(stored.secret)
    assert str(created["secret"])[6:].encode() not in bytes(stored.secret)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://example.com/hook", "events": ["job.failed"]}, "url"),  # plain http to a host not allowed
        ({"url": "https://user:pw@example.com/", "events": ["job.failed"]}, "url"),
        ({"url": "ftp://example.com/", "events": ["job.failed"]}, "url"),
        ({"url": "https://example.com:99999/", "events": ["job.failed"]}, "url"),
        ({"url": "https://example.com/" + "a" * 2100, "events": ["job.failed"]}, "url"),
        ({"url": RECEIVER, "events": []}, "events"),
        ({"url": RECEIVER, "events": ["job.exploded"]}, "events.0"),
        ({"url": RECEIVER, "events": "job.failed"}, "events"),
        ({"url": RECEIVER}, "events"),
        ({"events": ["job.failed"]}, "url"),
        ({"url": RECEIVER, "events": ["job.failed"], "secret": "whsec_mine"}, "secret"),
        ({"url": RECEIVER, "events": ["job.failed"], "description": "d" * 501}, "description"),
    ],
)
def test_a_bad_endpoint_is_refused_with_a_422_naming_the_field(
    app: httpx.Client, body: dict[str, object], field: str
) -> None:
    response = app.post("/v1/webhooks", json=body)

    assert response.status_code == 422, response.text
    assert field in error_fields(response)
    assert app.get("/v1/webhooks").json()["endpoints"] == []


def test_scopes_a_client_sees_only_its_own_endpoints_and_an_admin_sees_all(
    app: httpx.Client, make_client: Clients, admin: httpx.Client
) -> None:
    mine = register_webhook(app)
    other = make_client("webhooks:write")
    theirs = register_webhook(other)
    reader = make_client("webhooks:read")
    jobs_only = make_client("jobs:read")

    assert [e["id"] for e in other.get("/v1/webhooks").json()["endpoints"]] == [theirs["id"]]  # write may read
    for method, path in [
        ("GET", f"/v1/webhooks/{mine['id']}"),
        ("PATCH", f"/v1/webhooks/{mine['id']}"),
        ("DELETE", f"/v1/webhooks/{mine['id']}"),
        ("POST", f"/v1/webhooks/{mine['id']}/rotate-secret"),
        ("GET", f"/v1/webhooks/{mine['id']}/deliveries"),
    ]:
        answer = other.request(method, path, json={} if method == "PATCH" else None)
        assert answer.status_code == 404, (method, path, answer.text)
    assert reader.get("/v1/webhooks").json()["endpoints"] == []
    assert reader.post("/v1/webhooks", json={"url": RECEIVER, "events": ["job.failed"]}).status_code == 403
    refused = jobs_only.get("/v1/webhooks")
    assert refused.status_code == 403
    assert "'webhooks:read' or 'webhooks:write'" in refused.json()["error"]["message"]
    assert {e["id"] for e in admin.get("/v1/webhooks").json()["endpoints"]} == {mine["id"], theirs["id"]}
    assert admin.get(f"/v1/webhooks/{theirs['id']}").status_code == 200
    assert app.get(f"/v1/webhooks/{mine['id']}").json()["url"] == RECEIVER


def test_the_key_is_checked_before_the_body_is_read(make_client: Clients) -> None:
    reader = make_client("webhooks:read")

    unauthenticated = httpx.post(f"{reader.base_url}/v1/webhooks", content=b"{not json")
    forbidden = reader.post("/v1/webhooks", content=b"{not json", headers={"content-type": "application/json"})

    assert unauthenticated.status_code == 401
    assert forbidden.status_code == 403


def test_an_endpoint_is_changed_disabled_re_enabled_and_deleted(app: httpx.Client, make_client: Clients) -> None:
    created = register_webhook(app)
    path = f"/v1/webhooks/{created['id']}"

    changed = app.patch(path, json={"url": "https://other.invalid/h", "events": ["track.ready"], "description": "x"})
    disabled = app.patch(path, json={"enabled": False})
    with transaction() as session:
        session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == uuid.UUID(str(created["id"])))
            .values(failing_since=dt.datetime.now(dt.UTC))
        )
    enabled = app.patch(path, json={"enabled": True, "description": None})
    bad = app.patch(path, json={"url": "http://example.com/"})
    deleted = app.delete(path)

    assert changed.status_code == 200, changed.text
    assert (changed.json()["url"], changed.json()["events"], changed.json()["description"]) == (
        "https://other.invalid/h",
        ["track.ready"],
        "x",
    )
    assert disabled.json()["enabled"] is False
    assert disabled.json()["disabled_reason"].startswith("disabled by client-")
    assert enabled.json()["enabled"] is True
    assert enabled.json()["disabled_reason"] is enabled.json()["failing_since"] is None
    assert enabled.json()["description"] is None
    assert bad.status_code == 422
    assert error_fields(bad) == ["url"]
    assert deleted.status_code == 204
    assert app.get(path).status_code == 404
    assert app.delete(path).status_code == 404
    assert app.get("/v1/webhooks/not-a-uuid").status_code == 404


def signed(delivery_id: uuid.UUID) -> tuple[str, dict[str, str]]:
    """The body and headers the webhooks pool would send for the delivery now."""
    pending = load(delivery_id)
    assert isinstance(pending, Pending)
    return pending.body, signed_headers(pending, dt.datetime.now(dt.UTC))


def test_after_a_rotation_both_secrets_sign_until_the_overlap_ends(app: httpx.Client) -> None:
    created = register_webhook(app)
    old_secret = str(created["secret"])
    delivery_id = webhook_delivery(str(created["id"]), "pending")

    rotated = app.post(f"/v1/webhooks/{created['id']}/rotate-secret")

    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_")
    assert new_secret != old_secret
    expires = dt.datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
    assert dt.timedelta(hours=23) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=24)
    assert app.get(f"/v1/webhooks/{created['id']}").json()["previous_secret_expires_at"] is not None
    body, headers = signed(delivery_id)
    assert len(headers["webhook-signature"].split()) == 2
    Webhook(old_secret).verify(body, headers)
    Webhook(new_secret).verify(body, headers)

    with transaction() as session:  # the overlap is over
        session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == uuid.UUID(str(created["id"])))
            .values(previous_secret_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    body, headers = signed(delivery_id)
    assert len(headers["webhook-signature"].split()) == 1
    Webhook(new_secret).verify(body, headers)


def test_deliveries_are_listed_newest_first_with_every_attempt(app: httpx.Client) -> None:
    endpoint_id = str(register_webhook(app)["id"])
    hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    older = webhook_delivery(endpoint_id, "failed", attempts=2, created_at=hour_ago)
    newer = webhook_delivery(endpoint_id, "delivered", attempts=1)

    first = app.get(f"/v1/webhooks/{endpoint_id}/deliveries", params={"limit": 1})
    second = app.get(
        f"/v1/webhooks/{endpoint_id}/deliveries", params={"limit": 1, "cursor": first.json()["next_cursor"]}
    )
    failed_only = app.get(f"/v1/webhooks/{endpoint_id}/deliveries", params={"status": "failed"})
    bad = app.get(f"/v1/webhooks/{endpoint_id}/deliveries", params={"status": "lost", "limit": 0})

    assert [d["id"] for d in first.json()["deliveries"]] == [str(newer)]
    assert [d["id"] for d in second.json()["deliveries"]] == [str(older)]
    assert second.json()["next_cursor"] is None
    shown = failed_only.json()["deliveries"]
    assert [d["id"] for d in shown] == [str(older)]
    assert shown[0]["event_type"] == "job.failed"
    assert shown[0]["event_id"].startswith("evt_")
    assert [(a["number"], a["status_code"], a["latency_ms"]) for a in shown[0]["attempt_history"]] == [
        (1, 500, 12),
        (2, 500, 24),
    ]
    assert len(shown[0]["attempt_history"][0]["response_excerpt"]) == 2048
    assert shown[0]["attempt_history"][0]["error"] == "the receiver answered 500"
    assert bad.status_code == 422
    assert set(error_fields(bad)) >= {"status.0", "limit"}


def delivery_row(delivery_id: uuid.UUID) -> tuple[WebhookDelivery, Job | None]:
    with transaction() as session:
        row = session.get(WebhookDelivery, delivery_id)
        assert row is not None
        job = session.get(Job, row.job_id) if row.job_id else None
        return row, job


def test_resending_a_delivery_sets_it_pending_with_a_new_delivery_job(app: httpx.Client) -> None:
    created = register_webhook(app)
    endpoint_id = str(created["id"])
    failed = webhook_delivery(endpoint_id, "failed", attempts=3)
    pending = webhook_delivery(endpoint_id, "pending")

    resent = app.post(f"/v1/webhooks/{endpoint_id}/deliveries/{failed}/resend")
    again = app.post(f"/v1/webhooks/{endpoint_id}/deliveries/{failed}/resend")
    busy = app.post(f"/v1/webhooks/{endpoint_id}/deliveries/{pending}/resend")
    elsewhere = app.post(f"/v1/webhooks/{register_webhook(app)['id']}/deliveries/{failed}/resend")

    assert resent.status_code == 202, resent.text
    assert resent.json() == {"count": 1, "delivery_ids": [str(failed)]}
    row, job = delivery_row(failed)
    assert row.status == "pending"
    assert row.attempts == 3  # the history stays; the new job's attempts add to it
    assert job is not None
    assert job.type == "webhooks.deliver"
    assert job.payload == {"delivery_id": str(failed)}
    assert str(created["secret"]) not in str(job.payload)
    assert again.status_code == busy.status_code == 409
    assert again.json()["error"]["code"] == "delivery_pending"
    assert elsewhere.status_code == 404


def test_deliveries_not_yet_delivered_follow_the_endpoint_to_its_new_url(app: httpx.Client) -> None:
    endpoint_id = str(register_webhook(app)["id"])
    failed = webhook_delivery(endpoint_id, "failed", attempts=1)
    delivered = webhook_delivery(endpoint_id, "delivered", attempts=1)

    moved = app.patch(f"/v1/webhooks/{endpoint_id}", json={"url": "https://fixed.invalid/hooks"})
    resent = app.post(f"/v1/webhooks/{endpoint_id}/deliveries/{failed}/resend")

    assert moved.status_code == 200, moved.text
    assert resent.status_code == 202
    assert delivery_row(failed)[0].url == "https://fixed.invalid/hooks"
    assert delivery_row(delivered)[0].url == RECEIVER  # the record of where it went


def test_resending_every_failed_delivery_in_a_time_range(app: httpx.Client) -> None:
    endpoint_id = str(register_webhook(app)["id"])
    now = dt.datetime.now(dt.UTC)
    in_range = [webhook_delivery(endpoint_id, "failed", created_at=now - dt.timedelta(minutes=m)) for m in (50, 10)]
    too_old = webhook_delivery(endpoint_id, "failed", created_at=now - dt.timedelta(hours=2))
    delivered = webhook_delivery(endpoint_id, "delivered", created_at=now - dt.timedelta(minutes=30))
    window = {"since": (now - dt.timedelta(hours=1)).isoformat(), "until": now.isoformat()}

    resent = app.post(f"/v1/webhooks/{endpoint_id}/resend-failed", json=window)
    nothing_left = app.post(f"/v1/webhooks/{endpoint_id}/resend-failed", json=window)
    backwards = app.post(
        f"/v1/webhooks/{endpoint_id}/resend-failed", json={"since": window["until"], "until": window["since"]}
    )
    naive = app.post(f"/v1/webhooks/{endpoint_id}/resend-failed", json={"since": "2026-01-01T00:00:00", "until": 5})
    app.patch(f"/v1/webhooks/{endpoint_id}", json={"enabled": False})
    disabled = app.post(f"/v1/webhooks/{endpoint_id}/resend-failed", json=window)

    assert resent.status_code == 202, resent.text
    assert resent.json()["delivery_ids"] == [str(d) for d in in_range]  # oldest first
    assert nothing_left.json()["count"] == 0
    assert [delivery_row(d)[0].status for d in (*in_range, too_old, delivered)] == [
        "pending",
        "pending",
        "failed",
        "delivered",
    ]
    assert backwards.status_code == 422
    assert error_fields(backwards) == ["until"]
    assert naive.status_code == 422
    assert set(error_fields(naive)) == {"since", "until"}
    assert disabled.status_code == 409
    assert disabled.json()["error"]["code"] == "endpoint_disabled"


def test_the_cli_lists_creates_disables_shows_and_resends(app: httpx.Client) -> None:
    created = register_webhook(app)
    endpoint_id = str(created["id"])
    failed = webhook_delivery(endpoint_id, "failed", attempts=1)
    name = app.get("/v1/webhooks").json()["endpoints"][0]["client_id"]
    with transaction() as session:
        from models.platform import ApiClient

        client_name = session.scalars(select(ApiClient.name).where(ApiClient.id == uuid.UUID(name))).one()

    def roadie(*args: str) -> str:
        result = CliRunner().invoke(main, ["webhooks", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    created_by_cli = CliRunner().invoke(
        main, ["webhooks", "create", "--client", client_name, "--url", RECEIVER, "--events", "track.ready,job.failed"]
    )
    made_id, secret = created_by_cli.stdout.split()
    listing = roadie("list")
    shown = roadie("deliveries", endpoint_id, "--status", "failed")
    one = roadie("resend", str(failed))
    roadie("disable", made_id)
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    none_failed = roadie("resend", "--endpoint", endpoint_id, "--failed", "--since", since)
    unknown_event = CliRunner().invoke(
        main, ["webhooks", "create", "--client", client_name, "--url", RECEIVER, "--events", "nope"]
    )
    usage = CliRunner().invoke(main, ["webhooks", "resend", "--endpoint", endpoint_id])

    assert secret.startswith("whsec_")
    logged = [json.loads(line) for line in created_by_cli.stderr.splitlines()]
    assert [(line["event"], line["endpoint_id"]) for line in logged] == [("webhooks.endpoint_created", made_id)]
    assert secret not in created_by_cli.stderr
    assert app.get(f"/v1/webhooks/{made_id}").json()["events"] == ["job.failed", "track.ready"]
    assert endpoint_id in listing
    assert made_id in listing
    assert str(failed) in shown
    assert "the receiver answered 500" in shown
    assert one.splitlines() == ["re-sending 1 delivery", str(failed)]
    assert app.get(f"/v1/webhooks/{made_id}").json()["disabled_reason"].startswith("disabled by cli:")
    assert none_failed.splitlines() == ["re-sending 0 deliveries"]
    assert unknown_event.exit_code == 1
    assert "events must be a non-empty list" in unknown_event.output
    assert usage.exit_code == 2


def test_metrics_show_the_oldest_undelivered_event_per_endpoint_and_disabled_endpoints(
    app: httpx.Client, api_url: str
) -> None:
    waiting, idle = str(register_webhook(app)["id"]), str(register_webhook(app)["id"])
    webhook_delivery(waiting, "pending", created_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    webhook_delivery(waiting, "pending")
    webhook_delivery(idle, "delivered")
    app.patch(f"/v1/webhooks/{idle}", json={"enabled": False})

    samples = metric_samples(httpx.get(f"{api_url}/metrics", timeout=15).text)

    age = metric_value(samples, "roadie_webhook_oldest_undelivered_age_seconds", endpoint=waiting)
    assert 300 <= age < 400
    assert ("roadie_webhook_oldest_undelivered_age_seconds", frozenset({("endpoint", idle)})) not in samples
    assert metric_value(samples, "roadie_webhook_endpoints_disabled") == 1


def test_no_log_line_holds_a_secret(app: httpx.Client, processes: Processes) -> None:
    created = register_webhook(app)
    rotated = app.post(f"/v1/webhooks/{created['id']}/rotate-secret").json()
    app.get(f"/v1/webhooks/{created['id']}")

    api_log = next(p for p in processes.running if p.name == "api").log()

    assert f"/v1/webhooks/{created['id']}/rotate-secret" in api_log  # the log is the one these requests wrote
    for secret in (str(created["secret"]), rotated["secret"]):
        assert secret not in api_log
        assert secret[6:] not in api_log
