"""Beat's schedules driven by an operator: two real beats run nothing of a disabled schedule, and exactly one of
them runs it when asked; every change is audited and kept in the database, so a restarted beat obeys it too."""

from __future__ import annotations

import time
from typing import Any

import httpx
from click.testing import CliRunner
from sqlalchemy import func, select

from models.controls import ControlEvent, ScheduleState
from models.platform import Job
from roadie.cli import main
from roadie.db import transaction
from roadie.processes import ProcessGroup
from tests.test_durability import wait_until


def cli(*args: str) -> str:
    done = CliRunner().invoke(main, ["schedules", *args])
    assert done.exit_code == 0, done.output
    return done.output


def state(name: str) -> ScheduleState | None:
    with transaction() as session:
        return session.get(ScheduleState, name)


def rewards_jobs() -> int:
    with transaction() as session:
        return (
            session.scalar(
                select(func.count()).where(Job.type == "ledger.catch_up", Job.payload["kind"].astext == "rewards")
            )
            or 0
        )


def listed(admin: httpx.Client, name: str) -> dict[str, Any]:
    response = admin.get("/v1/admin/schedules")
    assert response.status_code == 200, response.text
    return next(s for s in response.json()["schedules"] if s["name"] == name)


def test_two_beats_run_nothing_of_a_disabled_schedule_and_one_runs_it_when_asked(
    beats: list[ProcessGroup], worker: ProcessGroup, admin: httpx.Client
) -> None:
    assert "DISABLED by cli:" in cli("disable", "ledger_rewards")
    for beat in beats:
        beat.start()
    wait_until(lambda: (royalties := state("ledger_royalties")) is not None and royalties.last_run_at, timeout=60)
    time.sleep(3)  # both beats fire every second: three periods of ledger_rewards go by

    assert rewards_jobs() == 0
    rewards = listed(admin, "ledger_rewards")
    assert rewards["enabled"] is False
    assert rewards["last_run_at"] is None
    assert rewards["next_run_at"] is None
    royalties = listed(admin, "ledger_royalties")
    assert royalties["last_outcome"] == "sent"
    assert royalties["schedule"] == "every 1s"

    asked = admin.post("/v1/admin/schedules/ledger_rewards/run")
    assert asked.status_code == 202, asked.text
    assert asked.json()["run_requested_at"] is not None
    wait_until(lambda: listed(admin, "ledger_rewards")["last_outcome"] == "sent", timeout=30)
    wait_until(lambda: rewards_jobs() == 1, timeout=30)
    time.sleep(2)
    assert rewards_jobs() == 1  # one run: one beat took the request, and the schedule stays disabled
    assert sum(beat.log().count('"beat.run_now"') for beat in beats) == 1

    beats[0].stop()
    beats[0].start()  # a restarted beat reads the table again: still nothing
    time.sleep(3)
    assert rewards_jobs() == 1

    cli("enable", "ledger_rewards")
    wait_until(lambda: listed(admin, "ledger_rewards")["last_run_at"] != asked.json()["last_run_at"], timeout=30)
    with transaction() as session:
        audit = session.execute(
            select(ControlEvent.action, ControlEvent.actor)
            .where(ControlEvent.target_kind == "schedule", ControlEvent.target == "ledger_rewards")
            .order_by(ControlEvent.id)
        ).all()
    assert [action for action, _ in audit] == ["disable", "run", "enable"]
    assert audit[1][1].startswith("ops-")


def test_unknown_schedules_are_404_and_the_cli_lists_every_entry(admin: httpx.Client) -> None:
    assert admin.post("/v1/admin/schedules/nope/disable").status_code == 404
    lines = cli("list").splitlines()
    assert {line.split()[0] for line in lines} >= {"sweep_outbox", "reap_lost_jobs", "ledger_rewards", "release_held"}
    unknown = CliRunner().invoke(main, ["schedules", "run", "nope"])
    assert unknown.exit_code == 1
    assert "no schedule 'nope'" in unknown.output
