"""What the intake API answers to bad input and missing credentials: a 4xx naming the problem."""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import Processes
from tests.helpers import submit


def test_health_and_readiness(api_url: str) -> None:
    assert httpx.get(f"{api_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{api_url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_openapi_describes_every_endpoint_and_the_echo_payload(api_url: str) -> None:
    spec = httpx.get(f"{api_url}/openapi.json").json()

    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/admin/jobs/retry"} <= set(spec["paths"])
    echo = spec["components"]["schemas"]["EchoPayload"]
    assert {"sleep_ms", "fail", "fail_times"} <= set(echo["properties"])


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer rk_live_not-a-key", "Basic dXNlcjpwYXNz"])
def test_a_missing_or_wrong_key_is_401(api_url: str, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}

    response = httpx.post(f"{api_url}/v1/jobs", json={"type": "platform.echo", "payload": {}}, headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthenticated"


def test_a_key_without_the_scope_is_403(make_client: Callable[..., httpx.Client]) -> None:
    reader = make_client("jobs:read")
    writer = make_client("jobs:write")

    assert reader.post("/v1/jobs", json={"type": "platform.echo", "payload": {}}).status_code == 403
    assert writer.get("/v1/jobs").status_code == 403
    assert writer.post("/v1/admin/jobs/retry", json={}).status_code == 403


def test_platform_echo_which_holds_workers_on_purpose_needs_the_rehearse_scope(
    make_client: Callable[..., httpx.Client],
) -> None:
    upstream_app = make_client("jobs:write", "jobs:read")

    refused = upstream_app.post("/v1/jobs", json={"type": "platform.echo", "payload": {"sleep_ms": 600_000}})

    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == "platform.echo needs the 'jobs:rehearse' scope, which this key lacks"
    assert upstream_app.get("/v1/jobs").json()["jobs"] == []


def test_an_invalid_payload_is_422_naming_the_field_and_reason(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", json={"type": "platform.echo", "payload": {"sleep_ms": -5, "fail": "x"}})

    assert response.status_code == 422
    fields = {f["field"]: f["reason"] for f in response.json()["error"]["fields"]}
    assert set(fields) == {"payload.sleep_ms", "payload.fail"}
    assert "greater than or equal to 0" in fields["payload.sleep_ms"]


def test_an_unknown_job_type_is_422(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", json={"type": "nope.nothing", "payload": {}})

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_job_type"
    assert response.json()["error"]["fields"][0]["field"] == "type"


@pytest.mark.parametrize(
    ("body", "field"),
    [([1, 2], "body"), ({"payload": {}}, "type"), ({"type": "platform.echo", "payload": []}, "payload")],
)
def test_a_request_of_the_wrong_shape_is_422(client: httpx.Client, body: object, field: str) -> None:
    response = client.post("/v1/jobs", json=body)

    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == field


def test_malformed_json_is_400(client: httpx.Client) -> None:
    response = client.post(
        "/v1/jobs", content=b'{"type": "platform.echo",', headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


ECHO = b'{"type": "platform.echo", "payload": {%s}}'


@pytest.mark.parametrize(
    ("body", "field"),
    [(ECHO % b'"x": NaN', "body"), (ECHO % b'"x": Infinity', "body"), (ECHO % b'"x": 1e400', "body"),
     (ECHO % b'"x": -1e400', "body"), (b"[" * 100_000 + b"]" * 100_000, "body"), (b"\xff\xfe", "body"),
     (ECHO % b'"x": "a\\u0000b"', "payload.x"), (ECHO % b'"x": ["\\ud800"]', "payload.x.0"),
     (ECHO % b'"\\udfff": 1', "payload")],
)  # fmt: skip
def test_json_postgres_cannot_store_is_400_naming_where_not_500(client: httpx.Client, body: bytes, field: str) -> None:
    response = client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"
    assert [f["field"] for f in response.json()["error"]["fields"]] == [field]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_declared_json_is_415(client: httpx.Client, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}

    response = client.post("/v1/jobs", content=b'{"type": "platform.echo", "payload": {}}', headers=headers)

    assert response.status_code == 415
    assert response.json()["error"]["fields"] == [{"field": "Content-Type", "reason": "must be application/json"}]


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"sleep_ms": "100"}, "payload.sleep_ms"), ({"sleep_ms": 1.5}, "payload.sleep_ms"),
     ({"fail_times": True}, "payload.fail_times")],
)  # fmt: skip
def test_payload_values_are_not_coerced(client: httpx.Client, payload: dict[str, object], field: str) -> None:
    response = client.post("/v1/jobs", json={"type": "platform.echo", "payload": payload})

    assert response.status_code == 422
    assert [f["field"] for f in response.json()["error"]["fields"]] == [field]


@pytest.mark.parametrize("mint", ["yes", 0, 1, "true"])
def test_a_mint_flag_that_is_not_a_json_boolean_is_422(make_client: Callable[..., httpx.Client], mint: object) -> None:
    writer = make_client("jobs:write")
    body = {"type": "track.ingest", "payload": {"track_id": "00000000-0000-0000-0000-000000000001", "mint": mint}}

    response = writer.post("/v1/jobs", json=body)

    assert response.status_code == 422
    assert [f["field"] for f in response.json()["error"]["fields"]] == ["payload.mint"]


BODIES = [b"{", b'{"x": 1e400}', b"x" * 2_000_000]


@pytest.mark.parametrize(
    ("path", "scope"), [("/v1/jobs", "jobs:write"), ("/v1/plays", "plays:write"), ("/v1/sales", "sales:write")]
)
@pytest.mark.parametrize("body", BODIES, ids=["malformed", "overflow", "oversized"])
def test_the_key_and_scope_are_checked_before_the_body_is_read(
    api_url: str, make_client: Callable[..., httpx.Client], path: str, scope: str, body: bytes
) -> None:
    for headers in ({"content-type": "application/json"}, {"content-type": "text/plain"}):
        anonymous = httpx.post(f"{api_url}{path}", content=body, headers=headers)
        unscoped = make_client("ledger:read").post(path, content=body, headers=headers)

        assert anonymous.status_code == 401
        assert unscoped.status_code == 403
        assert unscoped.json()["error"]["code"] == "forbidden"


def test_an_oversized_body_is_413_with_or_without_content_length(client: httpx.Client) -> None:
    big = b'{"type": "platform.echo", "payload": {"blob": "' + b"x" * 1_100_000 + b'"}}'
    json_type = {"content-type": "application/json"}

    assert client.post("/v1/jobs", content=big, headers=json_type).status_code == 413
    chunked = client.post("/v1/jobs", content=iter([big[:600_000], big[600_000:]]), headers=json_type)
    assert chunked.status_code == 413
    assert chunked.json()["error"]["code"] == "body_too_large"


def test_an_unknown_or_malformed_job_id_is_404(client: httpx.Client) -> None:
    assert client.get("/v1/jobs/00000000-0000-0000-0000-000000000000").status_code == 404
    assert client.get("/v1/jobs/not-a-uuid").status_code == 404


def test_list_pages_through_every_job_newest_first_without_overlap(client: httpx.Client) -> None:
    created = [submit(client, {"n": n})["id"] for n in range(25)]

    seen, cursor, pages = [], None, 0
    while True:
        params: dict[str, str | int] = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", params=params).json()
        seen += [job["id"] for job in page["jobs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert pages == 3
    assert seen == list(reversed(created))


def test_list_filters_by_status_type_and_time_range(client: httpx.Client) -> None:
    before = dt.datetime.now(dt.UTC)
    job = submit(client, {"n": 1})
    after = dt.datetime.now(dt.UTC)

    def ids(**params: str) -> list[str]:
        response = client.get("/v1/jobs", params=params)
        assert response.status_code == 200, response.text
        return [j["id"] for j in response.json()["jobs"]]

    assert ids(type="platform.echo", created_after=before.isoformat(), created_before=after.isoformat()) == [job["id"]]
    assert ids(created_after=after.isoformat()) == []
    assert ids(type="media.transcode") == []
    assert job["id"] in ids(status="queued,running,succeeded")


@pytest.mark.parametrize(
    ("params", "field"),
    [({"status": "bogus"}, "status.0"), ({"limit": "0"}, "limit"), ({"cursor": "!!"}, "cursor"),
     ({"created_after": "yesterday"}, "created_after"), ({"type": "a\x00b"}, "type.0"),
     ({"error_code": "a\x00b"}, "error_code"), ({"cursor": "a\x00b"}, "cursor"), ({"type": ""}, "type.0"),
     ({"status": "queued,"}, "status.1"), ({"error_code": ""}, "error_code")],
)  # fmt: skip
def test_bad_list_parameters_are_422(client: httpx.Client, params: dict[str, str], field: str) -> None:
    response = client.get("/v1/jobs", params=params)

    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == field


BIGINT_PAST = "9223372036854775808"


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [("/v1/payouts", {"after_id": BIGINT_PAST}, "after_id"), ("/v1/payouts", {"account_id": BIGINT_PAST}, "account_id"),
     ("/v1/payouts", {"after_id": "-1"}, "after_id"), (f"/v1/ledger/accounts/{BIGINT_PAST}", {}, "account_id"),
     ("/v1/ledger/accounts/treasury", {"before_id": BIGINT_PAST}, "before_id")],
)  # fmt: skip
def test_an_id_past_bigint_is_422_naming_the_parameter(
    make_client: Callable[..., httpx.Client], path: str, params: dict[str, str], field: str
) -> None:
    response = make_client("ledger:read").get(path, params=params)

    assert response.status_code == 422
    assert [f["field"] for f in response.json()["error"]["fields"]] == [field]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("DELETE", "/v1/jobs", "GET, HEAD, POST"), ("PUT", "/v1/jobs/00000000-0000-0000-0000-000000000000", "GET, HEAD"),
     ("GET", "/v1/plays", "POST")],
)  # fmt: skip
def test_a_wrong_method_is_405_with_every_allowed_method(
    client: httpx.Client, method: str, path: str, allowed: str
) -> None:
    response = client.request(method, path)

    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_a_client_that_disconnects_mid_body_is_no_unhandled_error(
    client: httpx.Client, processes: Processes, api_url: str
) -> None:
    request_id = f"gone-{uuid.uuid4().hex}"
    port = int(api_url.rsplit(":", 1)[1])
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: {client.headers['authorization']}\r\nX-Request-ID: {request_id}\r\n"
        "Content-Length: 1000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(head.encode() + b'{"type": "platform.echo", "pay')
        time.sleep(0.3)  # the API has authenticated and is reading the body

    api = next(p for p in processes.running if p.name == "api")
    deadline = time.monotonic() + 10
    while request_id not in api.log():
        assert time.monotonic() < deadline, "the API logged nothing of the request"
        time.sleep(0.1)
    mine = [json.loads(line) for line in api.log().splitlines() if request_id in line]
    events = {line["event"] for line in mine}
    assert "api.client_disconnected" in events
    assert "api.unhandled_error" not in events
    assert all(line["level"] != "error" for line in mine)


def test_a_refused_status_filter_names_the_allowed_values_as_plain_words(client: httpx.Client) -> None:
    response = client.get("/v1/jobs", params={"status": "bogus"})

    assert response.status_code == 422
    (field,) = response.json()["error"]["fields"]
    assert field["field"] == "status.0"
    assert field["reason"] == (
        "Input should be 'scheduled', 'queued', 'running', 'retrying', 'waiting', 'succeeded', 'failed' or 'cancelled'"
    )


def test_a_job_without_its_payload_is_422_naming_payload(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", json={"type": "platform.echo"})

    assert response.status_code == 422
    assert [f["field"] for f in response.json()["error"]["fields"]] == ["payload"]
