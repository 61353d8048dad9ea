"""Admins re-run failed jobs, one at a time or by filter; each re-run is recorded on the job."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import submit, wait_for_job

pytestmark = pytest.mark.usefixtures("worker")


def test_an_admin_reruns_a_failed_job_and_the_rerun_is_recorded(client: httpx.Client, admin: httpx.Client) -> None:
    job = wait_for_job(client, submit(client, {"fail": "permanent", "fail_times": 1})["id"], "failed")

    response = admin.post(f"/v1/admin/jobs/{job['id']}/retry")

    assert response.status_code == 202
    job = wait_for_job(client, job["id"], "succeeded")
    assert job["attempts"] == 2
    (rerun,) = job["reruns"]
    assert rerun["by"].startswith("ops-")
    assert rerun["attempt"] == 2
    assert rerun["previous_status"] == "failed"
    assert rerun["at"]


def test_rerunning_a_succeeded_job_is_refused_unless_forced(client: httpx.Client, admin: httpx.Client) -> None:
    job = wait_for_job(client, submit(client, {"n": 1})["id"], "succeeded")

    refused = admin.post(f"/v1/admin/jobs/{job['id']}/retry")
    forced = admin.post(f"/v1/admin/jobs/{job['id']}/retry", json={"force": True})

    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "job_succeeded"
    assert forced.status_code == 202
    job = wait_for_job(client, job["id"], "succeeded")
    assert job["attempts"] == 2
    assert job["reruns"][0]["forced"] is True


def test_bulk_rerun_by_error_code_requeues_only_matching_failed_jobs(client: httpx.Client, admin: httpx.Client) -> None:
    flaky = [submit(client, {"fail": "permanent", "fail_times": 1, "n": n})["id"] for n in range(3)]
    other = submit(client, {"fail": "transient", "fail_times": 9})["id"]
    done = submit(client, {"ok": True})["id"]
    for job_id in flaky:
        wait_for_job(client, job_id, "failed")
    wait_for_job(client, done, "succeeded")

    response = admin.post("/v1/admin/jobs/retry", json={"status": "failed", "error_code": "echo_permanent"})

    assert response.status_code == 202
    assert sorted(response.json()["job_ids"]) == sorted(flaky)
    for job_id in flaky:
        assert wait_for_job(client, job_id, "succeeded")["reruns"]
    assert client.get(f"/v1/jobs/{other}").json()["reruns"] == []
    assert client.get(f"/v1/jobs/{done}").json()["attempts"] == 1


def test_bulk_rerun_of_succeeded_jobs_needs_force(admin: httpx.Client) -> None:
    response = admin.post("/v1/admin/jobs/retry", json={"status": "succeeded"})

    assert response.status_code == 409
    assert response.json()["error"]["fields"][0]["field"] == "force"


@pytest.mark.parametrize(
    ("body", "field"),
    [(None, "body"), (b"null", "body"), (b"{}", "all"), (b'{"status": "failed"}', "all"), (b'{"all": false}', "all"),
     (b'{"all": "true"}', "all"), (b'{"type": "a\\u0000b"}', "type")],
)  # fmt: skip
def test_a_bulk_rerun_without_a_filter_or_all_true_reruns_nothing(
    client: httpx.Client, admin: httpx.Client, body: bytes | None, field: str
) -> None:
    failed = wait_for_job(client, submit(client, {"fail": "permanent"})["id"], "failed")

    response = admin.post("/v1/admin/jobs/retry", content=body, headers={"content-type": "application/json"})

    assert response.status_code in (400, 422)
    assert [f["field"] for f in response.json()["error"]["fields"]] == [field]
    assert client.get(f"/v1/jobs/{failed['id']}").json()["reruns"] == []


def test_all_true_reruns_every_failed_job(client: httpx.Client, admin: httpx.Client) -> None:
    failed = [submit(client, {"fail": "permanent", "fail_times": 1, "n": n})["id"] for n in range(2)]
    for job_id in failed:
        wait_for_job(client, job_id, "failed")

    response = admin.post("/v1/admin/jobs/retry", json={"all": True})

    assert response.status_code == 202
    assert sorted(response.json()["job_ids"]) == sorted(failed)


def test_a_null_body_on_a_single_rerun_is_422_and_no_body_means_the_defaults(
    client: httpx.Client, admin: httpx.Client
) -> None:
    job = wait_for_job(client, submit(client, {"fail": "permanent", "fail_times": 1})["id"], "failed")

    refused = admin.post(
        f"/v1/admin/jobs/{job['id']}/retry", content=b"null", headers={"content-type": "application/json"}
    )
    not_a_bool = admin.post(f"/v1/admin/jobs/{job['id']}/retry", json={"force": "yes"})

    assert refused.status_code == 422
    assert not_a_bool.status_code == 422
    assert [f["field"] for f in not_a_bool.json()["error"]["fields"]] == ["force"]
    assert client.get(f"/v1/jobs/{job['id']}").json()["reruns"] == []
    assert admin.post(f"/v1/admin/jobs/{job['id']}/retry").status_code == 202


def test_a_running_job_cannot_be_rerun(client: httpx.Client, admin: httpx.Client) -> None:
    job = submit(client, {"sleep_ms": 5000})
    wait_for_job(client, job["id"], "running")

    response = admin.post(f"/v1/admin/jobs/{job['id']}/retry")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "job_active"
    client.post(f"/v1/jobs/{job['id']}/cancel")


def test_admins_see_tracebacks(client: httpx.Client, admin: httpx.Client) -> None:
    job = wait_for_job(client, submit(client, {"fail": "permanent"})["id"], "failed")

    seen_by_admin = admin.get(f"/v1/jobs/{job['id']}").json()

    assert "PermanentError" in seen_by_admin["error"]["traceback"]
