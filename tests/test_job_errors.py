"""An unexpected error in a job shows its client a code and a generic message; the detail is for admins and the log."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest
from solders.keypair import Keypair

from roadie.db import transaction
from roadie.processes import ProcessGroup
from tests.fixtures.ledger import make_user
from tests.helpers import wait_for_job

#: A principal no other test uses, to find it wherever it leaks.
AMOUNT = 918_273_645_546_372


@pytest.fixture
def staking_refused_by_the_database() -> Iterator[None]:
    """Postgres itself refuses new staking positions, as a real database error would strike a job."""
    with transaction() as session:
        session.connection().exec_driver_sql(
            "CREATE FUNCTION refuse_position() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'positions are frozen for maintenance'; END $$;"
            "CREATE TRIGGER refuse_position BEFORE INSERT ON staking_positions "
            "FOR EACH ROW EXECUTE FUNCTION refuse_position()"
        )
    yield
    with transaction() as session:
        session.connection().exec_driver_sql("DROP FUNCTION refuse_position() CASCADE")


@pytest.mark.usefixtures("staking_refused_by_the_database")
def test_a_database_error_shows_the_client_a_code_and_the_job_id_and_the_admin_the_detail(
    make_client: Callable[..., httpx.Client], admin: httpx.Client, worker: ProcessGroup
) -> None:
    client = make_client("jobs:write", "jobs:read", "jobs:rehearse")
    with transaction() as session:
        user_id = make_user(session)
    payload = {
        "user_id": str(user_id),
        "mint_address": str(Keypair().pubkey()),
        "amount": AMOUNT,
        "rate_bps": 500,
        "rate_kind": "apr",
        "lock_seconds": 0,
    }
    submitted = client.post("/v1/jobs", json={"type": "staking.open", "payload": payload})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]

    seen = wait_for_job(client, job_id, "failed")
    listed = client.get("/v1/jobs", params={"status": "failed"}).json()["jobs"]
    detail = admin.get(f"/v1/jobs/{job_id}").json()

    assert seen["error"] == {
        "code": "internal_error",
        "message": f"the job hit an unexpected error; an operator can look it up by the job id {job_id}",
    }
    shown = json.dumps([seen, listed])
    for secret in ("INSERT", "staking_positions", "frozen for maintenance", "Traceback", "psycopg"):
        assert secret not in shown
    errors = json.dumps([seen["error"], seen["attempt_history"], [job["error"] for job in listed]])
    assert str(AMOUNT) not in errors  # the payload holds it; no error text does
    assert "frozen for maintenance" in detail["error"]["traceback"]
    assert "INSERT INTO staking_positions" in detail["error"]["traceback"]
    assert str(AMOUNT) not in detail["error"]["traceback"]  # the engines hide statement parameters
    logged = [json.loads(line) for line in worker.log().splitlines() if job_id in line and line.startswith("{")]
    (unexpected,) = [line for line in logged if line["event"] == "job.unexpected_error"]
    assert unexpected["error_code"] == "internal_error"
    assert "frozen for maintenance" in unexpected["exception"]
    assert str(AMOUNT) not in worker.log()
