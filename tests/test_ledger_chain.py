"""Payouts on the local chain: one batch per period, paid once, counted as paid only when finalized."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest
from click.testing import CliRunner
from solders.pubkey import Pubkey
from sqlalchemy import text
from sqlalchemy.orm import Session

from roadie.cli import main
from roadie.db import transaction
from roadie.ledger.books import fund_treasury
from roadie.ledger.payouts import follow_chain
from roadie.ledger.periods import catch_up
from roadie.ledger.plays import record_plays
from roadie.processes import ProcessGroup
from roadie.settings import get_settings
from tests.fixtures.ledger import balance, make_track, make_user, rules, wallet_of
from tests.test_durability import wait_until
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


def listeners_played_one_track(session: Session, listeners: int, at: dt.datetime) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """An artist, and ``listeners`` users with wallets who each played the artist's track once at ``at``."""
    fund_treasury(session, 10**15, "seed", at - dt.timedelta(days=1))
    artist = make_user(session)
    track = make_track(session, artist)
    users = [make_user(session) for _ in range(listeners)]
    for listener in users:
        played = {"event_id": uuid.uuid4().hex, "listener_id": str(listener), "track_id": str(track),
                  "started_at": at.isoformat(), "ms_listened": 60_000, "client": "test"}  # fmt: skip
        record_plays(session, [played], None, at, get_settings())
    return artist, users


def test_a_period_paying_several_users_in_one_batch_settles_every_payout_through_beat(
    beats: list[ProcessGroup],
) -> None:
    settings = get_settings()
    with transaction() as session:
        artist, listeners = listeners_played_one_track(session, 4, dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
        wallets = {user: Pubkey.from_string(wallet_of(session, user)) for user in [artist, *listeners]}

    beats[0].start()
    wait_until(lambda: [s for _, s in statuses()] == ["finalized"] * 5, timeout=150)
    beats[0].stop()

    assert "ledger.beat_payout_status" in beats[0].log()
    with transaction() as session:
        assert balance(session, "clearing") == 0
        assert session.execute(text("SELECT count(*) FROM payout_batches")).scalar_one() == 1
        settling = session.execute(text("SELECT count(DISTINCT settled_transaction_id) FROM payouts")).scalar_one()
        assert settling == 5  # one settling transaction per payout
        assert (
            balance(session, "external")
            == -(10**15) + 4 * settings.ledger_listener_rate + 4 * settings.ledger_artist_rate
        )
    assert [chain_balance(wallets[user]) for user in listeners] == [settings.ledger_listener_rate] * 4
    assert chain_balance(wallets[artist]) == 4 * settings.ledger_artist_rate


def test_ledger_check_fails_while_finalized_transfers_are_unsettled_and_passes_once_beat_settles_them() -> None:
    """The state a failing settle step left behind: transfers finalized on chain, payouts pending, in clearing."""
    settings = get_settings()
    now = dt.datetime.now(dt.UTC)
    with transaction() as session:
        listeners_played_one_track(session, 3, now - dt.timedelta(hours=2))
    catch_up("rewards", now, settings)

    def transfers_finalized() -> bool:
        with transaction() as session:
            found = session.execute(text("SELECT status FROM payout_transfers")).scalars().all()
        return len(found) == 4 and set(found) == {"finalized"}

    wait_until(transfers_finalized, timeout=120)
    with transaction() as session:  # the payouts were never settled, and the grace has passed
        session.execute(
            text("UPDATE payout_transfers SET updated_at = now() - make_interval(secs => :s)"),
            {"s": settings.ledger_settle_grace_s + 60},
        )
        stuck = session.execute(text("SELECT id FROM payouts WHERE status <> 'finalized' ORDER BY id")).scalars().all()
    assert len(stuck) == 4

    broken = CliRunner().invoke(main, ["ledger", "check"])

    assert broken.exit_code == 1
    assert '"ok": false' in broken.output
    for payout in stuck:
        assert f'"subject": "{payout}"' in broken.output
    assert "payouts_settled_once_finalized" in broken.output
    assert "finalized_transfers_settled" in broken.output

    with transaction() as session:
        settled = follow_chain(session)  # what beat's ledger_payout_status job runs
    assert settled["settled"] == 4
    assert CliRunner().invoke(main, ["ledger", "check"]).exit_code == 0
