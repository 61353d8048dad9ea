"""The ledger's endpoints: plays, sales, accounts and payouts, and the ledger job types through /v1/jobs."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from roadie.db import transaction
from roadie.ledger.books import fund_treasury
from roadie.ledger.periods import catch_up
from tests.fixtures.ledger import make_nft, make_track, make_user, rules
from tests.helpers import wait_for_job

pytestmark = pytest.mark.usefixtures("books")

Client = Callable[..., httpx.Client]


@pytest.fixture
def people() -> dict[str, uuid.UUID]:
    with transaction() as session:
        fund_treasury(session, 10**15, "seed", dt.datetime.now(dt.UTC))
        artist = make_user(session)
        return {
            "artist": artist,
            "listener": make_user(session),
            "track": make_track(session, artist, 120_000),
            "nft": make_nft(session, artist),
        }


def event(people: dict[str, uuid.UUID], **changes: Any) -> dict[str, Any]:
    base = {
        "event_id": uuid.uuid4().hex,
        "listener_id": str(people["listener"]),
        "track_id": str(people["track"]),
        "started_at": (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).isoformat(),
        "ms_listened": 45_000,
        "client": "ios/4.2.0",
    }
    return base | changes


def test_a_batch_of_plays_is_stored_once_per_event_id_with_each_bad_event_named(
    make_client: Client, people: dict[str, uuid.UUID]
) -> None:
    client = make_client("plays:write")
    repeated = event(people)
    assert client.post("/v1/plays", json={"events": [repeated]}).json()["accepted"] == 1
    now = dt.datetime.now(dt.UTC)
    batch = [
        event(people),
        repeated,  # stored by the previous batch
        event(people, event_id="same-twice"),
        event(people, event_id="same-twice"),
        event(people, started_at=(now + dt.timedelta(hours=1)).isoformat()),
        event(people, started_at=(now - dt.timedelta(days=30)).isoformat()),
        event(people, ms_listened=-1),
        event(people, ms_listened=10_000_000),  # the track is two minutes long
        event(people, track_id=str(uuid.uuid4())),
        event(people, listener_id=str(uuid.uuid4())),
        event(people, started_at="yesterday"),
    ]

    response = client.post("/v1/plays", json={"events": batch})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (2, 2, 7)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (4, "events.4.started_at"),
        (5, "events.5.started_at"),
        (6, "events.6.ms_listened"),
        (7, "events.7.ms_listened"),
        (8, "events.8.track_id"),
        (9, "events.9.listener_id"),
        (10, "events.10.started_at"),
    ]
    assert body["errors"][0]["reason"] == "is in the future"


def test_a_batch_with_no_storable_event_or_over_1000_events_is_a_422(
    make_client: Client, people: dict[str, uuid.UUID]
) -> None:
    client = make_client("plays:write")

    refused = client.post("/v1/plays", json={"events": [event(people, ms_listened="long")]})
    too_many = client.post("/v1/plays", json={"events": [event(people) for _ in range(1001)]})
    no_scope = make_client("jobs:write").post("/v1/plays", json={"events": [event(people)]})

    assert refused.status_code == 422
    assert refused.json()["error"]["fields"][0]["field"] == "events.0.ms_listened"
    assert too_many.status_code == 422
    assert too_many.json()["error"]["fields"][0]["field"] == "events"
    assert no_scope.status_code == 403


def test_a_sale_is_recorded_once_and_bad_shares_are_a_422_naming_creators(
    make_client: Client, people: dict[str, uuid.UUID]
) -> None:
    client = make_client("sales:write")
    with transaction() as session:
        other = make_user(session)
    sale: dict[str, Any] = {
        "signature": "".join(
            secrets.choice("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz") for _ in range(64)
        ),
        "nft_id": str(people["nft"]),
        "price": 1_000_000_333,
        "seller_fee_basis_points": 750,
        "sold_at": dt.datetime.now(dt.UTC).isoformat(),
        "creators": [{"user_id": str(people["artist"]), "share": 60}, {"user_id": str(other), "share": 40}],
    }

    first = client.post("/v1/sales", json=sale)
    replay = client.post("/v1/sales", json=sale)
    bad_shares = client.post("/v1/sales", json=sale | {"creators": [{"user_id": str(other), "share": 99}]})
    unknown_nft = client.post(
        "/v1/sales", json=sale | {"signature": sale["signature"][:-1], "nft_id": str(uuid.uuid4())}
    )

    assert first.status_code == 201, first.text
    assert first.json()["royalty"] == "75000024"
    # 45,000,014.4 and 30,000,009.6: the leftover unit goes to the larger remainder
    assert [c["amount"] for c in first.json()["creators"]] == ["45000014", "30000010"]
    assert replay.status_code == 200
    assert replay.json()["id"] == first.json()["id"]
    assert bad_shares.status_code == 422
    assert bad_shares.json()["error"]["fields"][0]["field"] == "creators"
    assert "sum to 100" in bad_shares.json()["error"]["message"]
    assert unknown_nft.status_code == 422
    assert [f["field"] for f in unknown_nft.json()["error"]["fields"]] == ["nft_id"]


def test_accounts_show_their_entries_and_payouts_filter_by_period_account_and_status(
    make_client: Client, people: dict[str, uuid.UUID]
) -> None:
    writer, reader = make_client("plays:write"), make_client("ledger:read")
    started = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    writer.post("/v1/plays", json={"events": [event(people, started_at=started.isoformat())]})
    catch_up("rewards", dt.datetime.now(dt.UTC) + dt.timedelta(hours=2), rules(ledger_min_payout=10))

    payouts = reader.get("/v1/payouts", params={"status": "pending"}).json()["payouts"]
    assert {p["amount"] for p in payouts} == {"100", "10"}  # the listener's and the artist's rewards
    account = reader.get(f"/v1/ledger/accounts/{payouts[0]['account_id']}").json()
    assert account["balance"] == "0"
    assert [e["transaction"]["kind"] for e in account["entries"]] == ["payout", "rewards"]
    treasury = reader.get("/v1/ledger/accounts/treasury").json()
    assert int(treasury["balance"]) == 10**15 - 110
    period = payouts[0]["period_start"]
    assert len(reader.get("/v1/payouts", params={"period_start": period}).json()["payouts"]) == 2
    assert reader.get("/v1/payouts", params={"account_id": payouts[0]["account_id"]}).json()["payouts"] == [payouts[0]]
    assert reader.get("/v1/payouts", params={"status": "finalized"}).json()["payouts"] == []
    assert reader.get("/v1/payouts", params={"status": "paid"}).status_code == 422
    assert reader.get("/v1/ledger/accounts/999999").status_code == 404


def test_ledger_jobs_run_on_the_ledger_pool_and_bad_staking_input_is_refused(
    make_client: Client, people: dict[str, uuid.UUID], worker: object
) -> None:
    client = make_client("jobs:write", "jobs:read")
    position = {
        "user_id": str(people["listener"]),
        "mint_address": "So11111111111111111111111111111111111111112",
        "amount": 10**12,
        "rate_bps": 800,
        "rate_kind": "apr",
        "lock_seconds": 0,
    }

    zero_rate = client.post("/v1/jobs", json={"type": "staking.open", "payload": position | {"rate_bps": 0}})
    too_high = client.post("/v1/jobs", json={"type": "staking.open", "payload": position | {"rate_bps": 5001}})
    program_mint = client.post(
        "/v1/jobs",
        json={"type": "staking.open", "payload": position | {"mint_address": "11111111111111111111111111111111"}},
    )
    opened = client.post("/v1/jobs", json={"type": "staking.open", "payload": position}).json()
    unknown = client.post("/v1/jobs", json={"type": "staking.unstake", "payload": {"position_id": str(uuid.uuid4())}})

    assert zero_rate.status_code == too_high.status_code == 422
    assert zero_rate.json()["error"]["fields"][0]["field"] == "payload.rate_bps"
    assert program_mint.status_code == 422
    assert program_mint.json()["error"]["fields"][0]["field"] == "payload.mint_address"
    assert "System Program" in program_mint.json()["error"]["fields"][0]["reason"]
    assert wait_for_job(client, opened["id"], "succeeded")["result"]["position_id"]
    failed = wait_for_job(client, unknown.json()["id"], {"failed", "succeeded"})
    assert failed["error"]["code"] == "unknown_position"
    checked = client.post("/v1/jobs", json={"type": "ledger.check", "payload": {}}).json()
    assert wait_for_job(client, checked["id"], "succeeded")["result"]["ok"] is True
