"""Group commit: concurrent job requests share a transaction, yet each keeps its own outcome.

These tests drive the API's group committer in-process against the real database, so they can
put chosen requests into one batch.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from sqlalchemy import exists, func, select, update

from models.platform import ApiClient, IdempotencyKey, Job, JobEvent, OutboxMessage
from roadie import auth
from roadie.db import async_engine, async_transaction, transaction
from roadie.jobs.creation import Submission
from roadie.jobs.group_commit import GroupCommit
from roadie.jobs.intake import IntakeError
from roadie.jobs.types import job_types
from roadie.settings import get_settings

T = TypeVar("T")
ECHO = job_types()["platform.echo"]


def run(work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` in a fresh event loop, then drop the loop's pooled connections."""

    async def wrapped() -> T:
        try:
            return await work()
        finally:
            await async_engine().dispose()

    return asyncio.run(wrapped())


@pytest.fixture
def api_client(database: str) -> Iterator[ApiClient]:
    async def create() -> ApiClient:
        async with async_transaction() as session:
            client, _ = await auth.create_client(session, f"app-{uuid.uuid4().hex[:8]}", ["jobs:write"])
            return client

    yield run(create)
    auth._lookups.clear()


async def submit_together(
    committer: GroupCommit, requests: list[tuple[ApiClient, dict[str, Any], str | None]]
) -> list[Submission | BaseException]:
    """Submit every request in the same turn of the event loop: they form one batch."""
    return await asyncio.gather(
        *(committer.submit(ECHO, payload, client=client, idempotency_key=key) for client, payload, key in requests),
        return_exceptions=True,
    )


def scalar(query: Any) -> Any:
    with transaction() as session:
        return session.scalar(query)


def publishable() -> int:
    """Jobs with an outbox row, or already published by a relay that happens to run."""
    pending = exists().where(OutboxMessage.job_id == Job.id)
    return int(scalar(select(func.count()).where(pending | Job.published_at.is_not(None))))


def test_concurrent_requests_share_one_transaction_and_each_gets_its_own_job(api_client: ApiClient) -> None:
    committer = GroupCommit(max_in_flight=1)

    outcomes = run(lambda: submit_together(committer, [(api_client, {"n": n}, None) for n in range(40)]))

    assert all(isinstance(o, Submission) and not o.replayed for o in outcomes)
    submissions = [o for o in outcomes if isinstance(o, Submission)]
    assert [s.job.payload for s in submissions] == [{"n": n} for n in range(40)]
    assert len({s.job.id for s in submissions}) == 40
    assert scalar(select(func.count()).select_from(Job)) == 40
    assert scalar(select(func.count()).where(JobEvent.kind == "created", JobEvent.actor == api_client.name)) == 40
    assert publishable() == 40
    # A job's created_at is its transaction's start: one for all forty.
    assert scalar(select(func.count(func.distinct(Job.created_at)))) == 1


def test_idempotency_keys_keep_their_rules_inside_a_batch(api_client: ApiClient) -> None:
    committer = GroupCommit()
    (stored, _) = run(
        lambda: submit_together(committer, [(api_client, {"n": 1}, "stored"), (api_client, {"n": 1}, "other-body")])
    )
    assert isinstance(stored, Submission)

    outcomes = run(
        lambda: submit_together(
            committer,
            [
                (api_client, {"n": 1}, "stored"),  # same key, same body: the original job
                (api_client, {"n": 2}, "other-body"),  # same key, another body: 422
                (api_client, {"n": 3}, "fresh"),  # a new key: a new job
                (api_client, {"n": 3}, "fresh"),  # the same key again while the first is in flight: 409
                (api_client, {"n": 4}, None),  # no key: a new job
            ],
        )
    )

    replay, reused, fresh, duplicate, unkeyed = outcomes
    assert isinstance(replay, Submission)
    assert replay.replayed
    assert replay.job.id == stored.job.id
    assert isinstance(reused, IntakeError)
    assert (reused.status, reused.code) == (422, "idempotency_key_reused")
    assert isinstance(fresh, Submission)
    assert not fresh.replayed
    assert isinstance(duplicate, IntakeError)
    assert (duplicate.status, duplicate.code) == (409, "idempotency_in_flight")
    assert isinstance(unkeyed, Submission)
    assert not unkeyed.replayed
    assert scalar(select(func.count()).select_from(Job)) == 4
    assert scalar(select(IdempotencyKey.job_id).where(IdempotencyKey.key == "fresh")) == fresh.job.id


def test_an_expired_key_is_replaced_by_a_new_job(api_client: ApiClient) -> None:
    committer = GroupCommit()
    (first,) = run(lambda: submit_together(committer, [(api_client, {"n": 1}, "daily")]))
    assert isinstance(first, Submission)
    with transaction() as session:
        session.execute(update(IdempotencyKey).values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))

    (again,) = run(lambda: submit_together(committer, [(api_client, {"n": 1}, "daily")]))

    assert isinstance(again, Submission)
    assert not again.replayed
    assert again.job.id != first.job.id
    assert scalar(select(func.count()).select_from(IdempotencyKey)) == 1


def test_a_request_the_database_refuses_fails_alone_and_leaves_nothing_behind(api_client: ApiClient) -> None:
    committer = GroupCommit(max_in_flight=1)
    poison = {"text": "nul \u0000 inside"}  # the API refuses it with 400; jsonb cannot store it

    good, bad, also_good = run(
        lambda: submit_together(
            committer, [(api_client, {"n": 1}, "a"), (api_client, poison, "b"), (api_client, {}, None)]
        )
    )

    assert isinstance(good, Submission)
    assert isinstance(also_good, Submission)
    assert isinstance(bad, psycopg.DataError)  # jsonb's own refusal
    assert scalar(select(func.count()).select_from(Job)) == 2  # each good job once, the bad one not at all
    assert publishable() == 2
    assert scalar(select(func.count()).select_from(IdempotencyKey)) == 1


def test_a_revoked_key_creates_no_job_even_while_its_lookup_is_remembered(api_client: ApiClient) -> None:
    async def lookup() -> ApiClient | None:
        async with async_transaction() as session:
            client, raw_key = await auth.create_client(session, "soon-revoked", ["jobs:write"])
        assert await auth.authenticate(None, raw_key) is not None  # now remembered
        async with async_transaction() as session:
            await session.execute(update(ApiClient).where(ApiClient.id == client.id).values(revoked_at=func.now()))
        return await auth.authenticate(None, raw_key)

    revoked = run(lookup)
    assert revoked is not None  # reads may go on for ROADIE_API_KEY_CACHE_TTL_S

    outcomes = run(lambda: submit_together(GroupCommit(), [(revoked, {}, None), (api_client, {}, None)]))

    refused, accepted = outcomes
    assert isinstance(refused, IntakeError)
    assert refused.status == 401
    assert isinstance(accepted, Submission)
    assert scalar(select(func.count()).select_from(Job)) == 1


def test_a_key_lookup_is_remembered_only_for_its_ttl(api_client: ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_settings(), "api_key_cache_ttl_s", 0.3)

    async def revoke_and_look_up() -> tuple[uuid.UUID, ApiClient | None, ApiClient | None]:
        async with async_transaction() as session:
            client, raw_key = await auth.create_client(session, "short-lived", ["jobs:read"])
        assert await auth.authenticate(None, raw_key) is not None
        async with async_transaction() as session:
            await session.execute(update(ApiClient).where(ApiClient.id == client.id).values(revoked_at=func.now()))
        within = await auth.authenticate(None, raw_key)
        await asyncio.sleep(0.4)
        return client.id, within, await auth.authenticate(None, raw_key)

    client_id, within, after = run(revoke_and_look_up)

    assert within is not None
    assert within.id == client_id
    assert after is None


def test_a_remembered_client_is_a_copy_of_its_own_for_each_caller(api_client: ApiClient) -> None:
    async def twice() -> tuple[ApiClient | None, ApiClient | None]:
        async with async_transaction() as session:
            _, raw_key = await auth.create_client(session, "copied", ["jobs:read", "jobs:write"])
        await auth.authenticate(None, raw_key)
        first = await auth.authenticate(None, raw_key)
        assert first is not None
        first.scopes.append("admin")
        return first, await auth.authenticate(None, raw_key)

    first, second = run(twice)

    assert first is not second
    assert second is not None
    assert second.scopes == ["jobs:read", "jobs:write"]
