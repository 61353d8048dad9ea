"""Payouts on the local chain: one batch per period, paid once, counted as paid only when finalized."""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner
from solders.keypair import Keypair
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
from tests.conftest import ROOT, create_key
from tests.fixtures.ledger import balance, make_track, make_user, rules, wallet_of
from tests.test_admin_console import sign_in
from tests.test_durability import wait_until
from tests.test_payouts import balance as chain_balance

pytestmark = pytest.mark.usefixtures("chain_running", "books", "worker", "api_url")

SYSTEM_PROGRAM = "11111111111111111111111111111111"


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


def unsettled_gauge(api_url: str) -> dict[str, float]:
    """``roadie_ledger_violations`` by check, as the API's /metrics exports it."""
    found = re.findall(r'^roadie_ledger_violations\{check="(\w+)"\} (\S+)$', httpx.get(f"{api_url}/metrics").text, re.M)
    return {check: float(value) for check, value in found}


def test_ledger_check_fails_while_finalized_transfers_are_unsettled_and_passes_once_beat_settles_them(
    api_url: str,
) -> None:
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
    alerting = unsettled_gauge(api_url)
    assert alerting["payouts_settled_once_finalized"] == 4
    assert alerting["finalized_transfers_settled"] == 4

    with transaction() as session:
        settled = follow_chain(session)  # what beat's ledger_payout_status job runs
    assert settled["settled"] == 4
    assert CliRunner().invoke(main, ["ledger", "check"]).exit_code == 0
    assert set(unsettled_gauge(api_url).values()) == {0}


def test_the_alert_rule_watches_the_gauge_of_every_settlement_check() -> None:
    rules = yaml.safe_load((ROOT / "docs/alerts/ledger.rules.yml").read_text())["groups"][0]["rules"]
    unsettled = next(rule for rule in rules if rule["alert"] == "RoadieLedgerUnsettled")

    assert "roadie_ledger_violations" in unsettled["expr"]
    assert "by (check)" in unsettled["expr"]  # one alert per failing check, named in its labels


def link_wallet(session: Session, user: uuid.UUID, address: str) -> None:
    """Make ``address`` the user's primary Solana wallet, as a stored wallet row (however it got there)."""
    session.execute(text("UPDATE wallets SET is_primary = false WHERE id IN (SELECT wallet_id FROM user_wallets"
                         " WHERE user_id = :u)"), {"u": user})  # fmt: skip
    wallet = session.execute(
        text("INSERT INTO wallets (id, address, chain, is_primary) VALUES (gen_random_uuid(), :a, 'solana', true)"
             " RETURNING id"), {"a": address},
    ).scalar_one()  # fmt: skip
    session.execute(
        text("INSERT INTO user_wallets (id, user_id, wallet_id) VALUES (gen_random_uuid(), :u, :w)"),
        {"u": user, "w": wallet},
    )


def test_a_recipient_whose_wallet_cannot_receive_is_held_for_an_admin_while_everyone_else_is_paid(
    api_url: str,
) -> None:
    settings = get_settings()
    now = dt.datetime.now(dt.UTC)
    program_derived = str(Pubkey.find_program_address([b"vault"], Pubkey.from_string(SYSTEM_PROGRAM))[0])
    with transaction() as session:
        _, listeners = listeners_played_one_track(session, 4, now - dt.timedelta(hours=2))
        paid_listeners, (on_program, off_curve) = listeners[:2], listeners[2:]
        link_wallet(session, on_program, SYSTEM_PROGRAM)
        link_wallet(session, off_curve, program_derived)

    catch_up("rewards", now, settings)

    with transaction() as session:
        accounts: dict[uuid.UUID, int] = dict(
            session.execute(
                text("SELECT user_id, id FROM ledger_accounts WHERE kind = 'rewards' AND user_id = ANY(:u)"),
                {"u": [on_program, off_curve]},
            ).all()
        )
        paid_to = set(session.execute(text("SELECT wallet FROM payouts")).scalars())
        assert SYSTEM_PROGRAM not in paid_to
        assert program_derived not in paid_to
        assert len(paid_to) == 3  # the two listeners with wallets, and the artist
        for user in (on_program, off_curve):
            assert balance(session, "rewards", user) == settings.ledger_listener_rate  # still owed
    holds = {hold["account_id"]: hold for hold in admin_holds(api_url)}
    assert set(holds) == set(accounts.values())
    assert "the System Program" in holds[accounts[on_program]]["reason"]
    assert "off the ed25519 curve" in holds[accounts[off_curve]]["reason"]
    assert holds[accounts[on_program]]["owed"] == str(settings.ledger_listener_rate)

    def paid_on_chain() -> bool:
        with transaction() as session:
            follow_chain(session)
            return set(session.execute(text("SELECT status FROM payouts")).scalars()) == {"finalized"}

    wait_until(paid_on_chain, timeout=120)
    with transaction() as session:
        for user in paid_listeners:
            assert chain_balance(Pubkey.from_string(wallet_of(session, user))) == settings.ledger_listener_rate
        fixed = Keypair().pubkey()
        link_wallet(session, on_program, str(fixed))  # the user links a wallet that can receive

    catch_up("rewards", now + dt.timedelta(seconds=settings.ledger_reward_period_s), settings)

    with transaction() as session:
        assert balance(session, "rewards", on_program) == 0
        assert str(fixed) in set(session.execute(text("SELECT wallet FROM payouts")).scalars())
    assert [hold["account_id"] for hold in admin_holds(api_url)] == [accounts[off_curve]]
    wait_until(paid_on_chain, timeout=120)
    assert chain_balance(fixed) == settings.ledger_listener_rate


def admin_holds(api_url: str) -> list[dict[str, Any]]:
    """The holds as an admin sees them through the API, checked against the console's page."""
    key = create_key(f"ops-{uuid.uuid4().hex[:6]}", ["admin"])
    with httpx.Client(base_url=api_url, timeout=15, headers={"Authorization": f"Bearer {key}"}) as http:
        holds: list[dict[str, Any]] = http.get("/v1/admin/payout-holds").raise_for_status().json()["holds"]
    with httpx.Client(base_url=api_url, timeout=15) as browser:
        sign_in(browser, key)
        page = browser.get("/admin/payout-holds")
    assert page.status_code == 200
    for hold in holds:
        assert hold["wallet"] in page.text
    return holds
