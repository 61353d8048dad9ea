"""Payouts on the local chain: one batch per period, paid once, counted as paid only when finalized."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest
from solders.pubkey import Pubkey
from sqlalchemy import text

from roadie.db import transaction
from roadie.ledger.books import fund_treasury
from roadie.ledger.payouts import follow_chain
from roadie.ledger.periods import catch_up
from roadie.ledger.plays import record_plays
from tests.fixtures.ledger import balance, make_track, make_user, rules, wallet_of
from tests.test_payouts import balance as chain_balance

pytestmark = pytest.mark.usefixtures("chain_running", "books", "worker", "api_url")


def statuses() -> list[tuple[int, str]]:
    with transaction() as session:
        return [(int(a), s) for a, s in session.execute(text("SELECT amount, status FROM payouts ORDER BY id"))]


def test_a_periods_payouts_are_paid_on_chain_once_and_count_as_paid_only_when_finalized() -> None:
    now = dt.datetime.now(dt.UTC)
    with transaction() as session:
        fund_treasury(session, 10**12, "seed", now - dt.timedelta(days=1))
        artist, listener = make_user(session), make_user(session)
        track = make_track(session, artist)
        for minutes in (130, 125, 120):
            started = now - dt.timedelta(minutes=minutes)
            played = {"event_id": uuid.uuid4().hex, "listener_id": str(listener), "track_id": str(track),
                      "started_at": started.isoformat(), "ms_listened": 60_000, "client": "test"}  # fmt: skip
            record_plays(session, [played], None, started, rules())
        wallet = Pubkey.from_string(wallet_of(session, listener))

    catch_up("rewards", now, rules(ledger_min_payout=250))
    catch_up("rewards", now + dt.timedelta(seconds=1), rules(ledger_min_payout=250))  # again: nothing new

    assert statuses() == [(300, "pending")]  # the artist's 30 stay below the minimum, carried
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and statuses() != [(300, "finalized")]:
        with transaction() as session:
            follow_chain(session)
        with transaction() as session:
            status = session.execute(text("SELECT status FROM payouts")).scalar_one()
            seen.add(status)
            if status != "finalized":
                assert balance(session, "external") == -(10**12)  # nothing counts as paid before finality
        time.sleep(0.2)

    assert statuses() == [(300, "finalized")]
    assert chain_balance(wallet) == 300
    assert seen & {"submitted", "confirmed"}, seen
    with transaction() as session:
        assert balance(session, "clearing") == 0
        assert balance(session, "external") == 300 - 10**12
        assert balance(session, "rewards", artist) == 30
        batches = session.execute(text("SELECT key, status FROM payout_batches")).all()
    assert len(batches) == 1
    assert batches[0].status == "finalized"
    assert batches[0].key.startswith("rewards:")
