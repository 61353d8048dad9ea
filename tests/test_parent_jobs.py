"""A parent job waits for its children off the workers, and a finishing child wakes it through the outbox."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from models.platform import Job, JobAttempt, JobStatus, OutboxMessage
from roadie.db import transaction
from roadie.jobs.errors import WaitForChildren
from roadie.jobs.runtime import Claim, claim, record_success, record_wait
from roadie.jobs.types import job_types

ECHO = job_types()["platform.echo"]

pytestmark = pytest.mark.usefixtures("without_relay_or_workers")


def _job(parent: Job | None = None, status: str = JobStatus.QUEUED) -> uuid.UUID:
    from roadie.jobs.creation import new_job

    with transaction() as session:
        job = new_job(ECHO, {}, parent_id=parent.id if parent else None)
        job.status = status
        session.add(job)
        session.flush()
        return job.id


def _load(job_id: uuid.UUID) -> Job:
    with transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _outbox(job_id: uuid.UUID) -> int:
    with transaction() as session:
        return len(session.scalars(select(OutboxMessage).where(OutboxMessage.job_id == job_id)).all())


def _waiting_parent_with_child() -> tuple[uuid.UUID, uuid.UUID]:
    parent_id = _job()
    parent_claim = claim(parent_id, message_id="m-parent", worker="w")
    assert isinstance(parent_claim, Claim)
    child_id = _job(_load(parent_id))
    assert record_wait(parent_claim, WaitForChildren([child_id], result={"stage": "one"})) == JobStatus.WAITING
    return parent_id, child_id


def test_a_waiting_parent_frees_its_worker_and_shows_its_interim_result() -> None:
    parent_id, _ = _waiting_parent_with_child()

    parent = _load(parent_id)
    assert parent.status == JobStatus.WAITING
    assert parent.lease_id is None
    assert parent.result == {"stage": "one"}
    assert parent.run_attempts == 0
    assert _outbox(parent_id) == 0
    with transaction() as session:
        (attempt,) = session.scalars(select(JobAttempt).where(JobAttempt.job_id == parent_id)).all()
        assert attempt.outcome == "waiting"


def test_a_child_that_succeeds_requeues_its_waiting_parent_in_the_same_transaction() -> None:
    parent_id, child_id = _waiting_parent_with_child()
    child_claim = claim(child_id, message_id="m-child", worker="w")
    assert isinstance(child_claim, Claim)

    assert record_success(child_claim, {"ok": True})

    assert _load(parent_id).status == JobStatus.QUEUED
    assert _outbox(parent_id) == 1


@pytest.mark.parametrize("outcome", [JobStatus.FAILED, JobStatus.CANCELLED])
def test_a_child_that_fails_or_is_cancelled_wakes_its_parent_too(outcome: str) -> None:
    parent_id, child_id = _waiting_parent_with_child()

    with transaction() as session:
        child = session.get(Job, child_id)
        assert child is not None
        child.status = outcome

    assert _load(parent_id).status == JobStatus.QUEUED
    assert _outbox(parent_id) == 1


def test_a_child_finishing_while_its_parent_runs_is_not_missed() -> None:
    parent_id = _job()
    parent_claim = claim(parent_id, message_id="m-parent", worker="w")
    assert isinstance(parent_claim, Claim)
    child_id = _job(_load(parent_id))
    child_claim = claim(child_id, message_id="m-child", worker="w")
    assert isinstance(child_claim, Claim)
    assert record_success(child_claim, {})  # the parent is running: the trigger leaves it alone

    status = record_wait(parent_claim, WaitForChildren([child_id]))

    assert status == JobStatus.QUEUED  # runs again at once instead of waiting for nothing
    assert _outbox(parent_id) == 1


def test_only_the_parent_of_a_finishing_child_is_woken() -> None:
    parent_id, _ = _waiting_parent_with_child()
    other_parent, _ = _waiting_parent_with_child()
    orphan = _job()
    orphan_claim = claim(orphan, message_id="m-orphan", worker="w")
    assert isinstance(orphan_claim, Claim)

    assert record_success(orphan_claim, {})

    assert _load(parent_id).status == JobStatus.WAITING
    assert _load(other_parent).status == JobStatus.WAITING


def test_a_stale_run_of_the_parent_cannot_record_a_wait() -> None:
    parent_id = _job()
    first = claim(parent_id, message_id="m1", worker="w")
    assert isinstance(first, Claim)
    child_id = _job(_load(parent_id))
    with transaction() as session:  # the reaper gave the job to someone else
        parent = session.get(Job, parent_id)
        assert parent is not None
        parent.lease_id = uuid.uuid4()

    assert record_wait(first, WaitForChildren([child_id])) is None
    assert _load(parent_id).status == JobStatus.RUNNING


def test_waiting_for_no_children_is_refused() -> None:
    with pytest.raises(ValueError, match="child jobs"):
        WaitForChildren([])
