"""What the intake API answers to bad input and missing credentials: a 4xx naming the problem."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import httpx
import pytest

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


@pytest.mark.parametrize(
    "body",
    [b'{"type": "platform.echo", "payload": {"x": NaN}}', b'{"type": "platform.echo", "payload": {"x": "a\\u0000b"}}',
     b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe", b'{"type": "platform.echo", "payload": {"x": Infinity}}'],
)  # fmt: skip
def test_json_postgres_cannot_store_is_400_not_500(client: httpx.Client, body: bytes) -> None:
    response = client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


def test_an_oversized_body_is_413_with_or_without_content_length(client: httpx.Client) -> None:
    big = b'{"type": "platform.echo", "payload": {"blob": "' + b"x" * 1_100_000 + b'"}}'

    assert client.post("/v1/jobs", content=big).status_code == 413
    chunked = client.post("/v1/jobs", content=iter([big[:600_000], big[600_000:]]))
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
     ({"created_after": "yesterday"}, "created_after")],
)  # fmt: skip
def test_bad_list_parameters_are_422(client: httpx.Client, params: dict[str, str], field: str) -> None:
    response = client.get("/v1/jobs", params=params)

    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == field
