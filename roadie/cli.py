"""The ``roadie`` command: run the platform's processes and administer keys and jobs."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, Literal, TypeVar

import click
import psycopg
import sqlalchemy.exc
from sqlalchemy import select
from sqlalchemy.engine import make_url

from models.platform import SCOPES, ApiClient, JobStatus
from models.webhooks import DELIVERY_STATUSES, EVENT_TYPES
from roadie.db import async_engine, async_transaction
from roadie.jobs import intake
from roadie.jobs.intake import IntakeError, JobFilter
from roadie.jobs.views import job_view

T = TypeVar("T")


def _run(work: Callable[[], Awaitable[T]]) -> T:
    async def scoped() -> T:
        try:
            return await work()
        finally:
            await async_engine().dispose()

    try:
        return asyncio.run(scoped())
    except IntakeError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from exc


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


class RoadieCommands(click.Group):
    """Turns an unreachable database into one line and exit status 1 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, psycopg.OperationalError) as exc:
            raise click.ClickException(_unreachable_database(exc)) from None


def _unreachable_database(exc: Exception) -> str:
    """Where the database was looked for and the driver's first line of why, with no URL or password."""
    from roadie.settings import get_settings

    settings = get_settings()
    url = make_url(settings.sqlalchemy_url)
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    hint = " (the embedded server: is `roadie up` running?)" if settings.embedded_database else ""
    return f"cannot reach the database at {url.host}:{url.port}{hint}: {reason}"


@click.group(cls=RoadieCommands)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Roadie: the worker platform of the music service."""
    from roadie.logs import configure_logging
    from roadie.settings import get_settings

    if ctx.invoked_subcommand in ("demo", "up"):  # they talk to a person: the log lines go to a file
        configure_logging("cli", to_file=get_settings().home / "logs" / "roadie.log")
    else:
        configure_logging("relay" if ctx.invoked_subcommand == "relay" else "cli")


@main.command()
def up() -> None:
    """Run the API, the relay, a worker per pool and beat until Ctrl-C or SIGTERM."""
    from roadie.supervisor import up as run_up

    run_up()


@main.command()
@click.option("--host", default=None, help="Default: ROADIE_API_HOST.")
@click.option("--port", type=int, default=None, help="Default: ROADIE_API_PORT.")
@click.option("--access-log/--no-access-log", default=True, show_default=True)
def api(host: str | None, port: int | None, access_log: bool) -> None:
    """Serve the intake API, with the slow-client timeouts and connection cap of the ROADIE_API_* settings."""
    from api.server import serve
    from roadie.settings import get_settings

    settings = get_settings()
    serve(host or settings.api_host, port or settings.api_port, access_log=access_log)


@main.command()
def demo() -> None:
    """Start everything, enqueue a sample job over HTTP, print its result, stop."""
    from roadie.demo import run_demo

    sys.exit(run_demo())


@main.command()
def migrate() -> None:
    """Upgrade the database to the newest schema."""
    from alembic import command
    from alembic.config import Config

    command.upgrade(Config("alembic.ini"), "head")


@main.command()
def relay() -> None:
    """Publish committed jobs from the outbox to the broker (run one or more)."""
    from roadie.db import use_role
    from roadie.heap import freeze_startup_heap
    from roadie.jobs.outbox import relay_forever

    use_role("relay")
    freeze_startup_heap()
    with suppress(KeyboardInterrupt):
        relay_forever()


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("flower_options", nargs=-1, type=click.UNPROCESSED)
def flower(flower_options: tuple[str, ...]) -> None:
    """Run Flower on the broker, with basic auth or OAuth from the ROADIE_FLOWER_* settings.

    Further Flower options (--persistent, --url_prefix=..., --purge_offline_workers=...) are passed on;
    credentials, address and port come only from the settings.
    """
    from roadie.flower import FlowerConfigError, exec_flower
    from roadie.settings import get_settings

    try:
        exec_flower(get_settings(), flower_options)
    except FlowerConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="Default: the port of ROADIE_SOLANA_RPC_URL.")
@click.option("--slot-ms", type=int, default=None, help="A block every N ms; 0: only on request.")
@click.option("--finality-lag", type=int, default=None, help="Blocks between confirmed and finalized.")
@click.option(
    "--provision/--no-provision",
    default=True,
    show_default=True,
    help="Fund the platform keypair (creating its file if missing) and create the reward mint and the treasury.",
)
@click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Keep the chain's state in this file across restarts (default: in memory only).",
)
def localnet(
    host: str, port: int | None, slot_ms: int | None, finality_lag: int | None, provision: bool, state: Path | None
) -> None:
    """Run the local Solana chain (LiteSVM behind JSON-RPC) until Ctrl-C or SIGTERM."""
    from roadie.chain.localnet import StateFileError, serve

    try:
        sys.exit(
            serve(host=host, port=port, slot_ms=slot_ms, finality_lag=finality_lag, provision=provision, state=state)
        )
    except StateFileError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("chain-setup")
def chain_setup() -> None:
    """On a test cluster (solana-test-validator, devnet): fund the platform keypair, create the reward mint."""
    from roadie.chain.client import connect
    from roadie.chain.platform import provision

    async def work() -> str:
        async with connect() as chain:
            return str(await provision(chain))

    click.echo(asyncio.run(work()))


@main.group()
def keys() -> None:
    """API keys."""


SCOPES_HELP = "Comma-separated, some of: " + ", ".join(SCOPES) + "."


def _print_new_key(raw_key: str) -> None:
    click.echo(raw_key)
    click.echo("Store this key now: Roadie keeps only its hash and cannot show it again.", err=True)


@keys.command("create")
@click.option("--name", required=True, help="Who the key is for (unique).")
@click.option("--scopes", required=True, help=SCOPES_HELP)
def keys_create(name: str, scopes: str) -> None:
    """Create a key and print it once; only its hash is stored."""
    from roadie.auth import create_client

    async def work() -> str:
        async with async_transaction() as session:
            _, raw_key = await create_client(session, name, [s.strip() for s in scopes.split(",") if s.strip()])
            return raw_key

    try:
        raw_key = _run(work)
    except ValueError as exc:  # an unknown scope or a name already taken
        raise click.ClickException(str(exc)) from exc
    _print_new_key(raw_key)


@keys.command("list")
def keys_list() -> None:
    """Every key: name, prefix, scopes, when made and, if so, when revoked. Keys themselves are never shown."""
    from roadie.auth import list_clients

    async def work() -> list[str]:
        async with async_transaction() as session:
            return [
                f"{c.name:<24} {c.key_prefix}…  {','.join(c.scopes):<40} created {c.created_at:%Y-%m-%d %H:%M}"
                + (f"  revoked {c.revoked_at:%Y-%m-%d %H:%M}" if c.revoked_at else "")
                for c in await list_clients(session)
            ]

    for line in _run(work):
        click.echo(line)


@keys.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Revoke a key: it creates no job from now on, and its console sessions end."""
    from roadie.auth import revoke_client

    async def work() -> bool:
        async with async_transaction() as session:
            return await revoke_client(session, name) is not None

    if not _run(work):
        raise click.ClickException(f"no live key named {name!r}")
    click.echo(f"revoked {name}")


def _quota_value(value: str | None) -> int | None:
    return None if value in (None, "default") else int(value)


@keys.command("quota")
@click.argument("name")
@click.option("--per-minute", "per_minute", default=None, help="Jobs accepted per minute; 'default': the setting's.")
@click.option("--per-day", "per_day", default=None, help="Jobs accepted per day; 'default': the setting's.")
def keys_quota(name: str, per_minute: str | None, per_day: str | None) -> None:
    """Set a key's client's own quota of accepted jobs (0 refuses every job); APIs apply it within seconds."""
    from roadie.quotas import quota_of, set_quota

    try:
        minute, day = _quota_value(per_minute), _quota_value(per_day)
    except ValueError as exc:
        raise click.BadParameter("a quota is a whole number of jobs, or 'default'") from exc
    if any(value is not None and value < 0 for value in (minute, day)):
        raise click.BadParameter("a quota is 0 or more")

    async def work() -> str | None:
        async with async_transaction() as session:
            client = await set_quota(session, name, minute, day, actor=_actor())
            if client is None:
                return None
            quota = quota_of(client)
            shown = ["no limit" if n is None else str(n) for n in (quota.jobs_per_minute, quota.jobs_per_day)]
            return f"{name}: {shown[0]} jobs/minute, {shown[1]} jobs/day"

    line = _run(work)
    if line is None:
        raise click.ClickException(f"no live key named {name!r}")
    click.echo(line)


@keys.command("rotate")
@click.argument("name")
def keys_rotate(name: str) -> None:
    """Give a key's client a new key with the same scopes, printed once; the old key stops working."""
    from roadie.auth import rotate_client

    async def work() -> str | None:
        async with async_transaction() as session:
            rotated = await rotate_client(session, name)
            return rotated[1] if rotated else None

    raw_key = _run(work)
    if raw_key is None:
        raise click.ClickException(f"no live key named {name!r}")
    _print_new_key(raw_key)


@main.group()
def jobs() -> None:
    """Inspect, re-run and cancel jobs."""


def _filter_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option("--status", "statuses", multiple=True, type=click.Choice([s.value for s in JobStatus])),
            click.option("--type", "types", multiple=True),
            click.option("--since", type=click.DateTime(), help="Created at or after (UTC)."),
            click.option("--until", type=click.DateTime(), help="Created before (UTC)."),
            click.option("--error-code"),
        ]
    ):
        function = option(function)
    return function


def _job_filter(
    statuses: tuple[str, ...],
    types: tuple[str, ...],
    since: dt.datetime | None,
    until: dt.datetime | None,
    error_code: str | None,
) -> JobFilter:
    def utc(value: dt.datetime | None) -> dt.datetime | None:
        return value.replace(tzinfo=dt.UTC) if value else None

    return JobFilter(statuses, types, utc(since), utc(until), error_code)


@jobs.command("list")
@_filter_options
@click.option("--limit", default=50, show_default=True)
def jobs_list(
    statuses: tuple[str, ...],
    types: tuple[str, ...],
    since: dt.datetime | None,
    until: dt.datetime | None,
    error_code: str | None,
    limit: int,
) -> None:
    """List jobs, newest first."""

    async def work() -> list[dict[str, Any]]:
        async with async_transaction() as session:
            found, _ = await intake.list_jobs(
                session, None, _job_filter(statuses, types, since, until, error_code), limit=limit, cursor=None
            )
            return [job_view(job).plain() for job in found]

    for job in _run(work):
        error = f" {job['error']['code']}" if job["error"] else ""
        click.echo(f"{job['id']}  {job['created_at']}  {job['type']:<24} {job['status']:<10}{error}")


@jobs.command("show")
@click.argument("job_id", type=click.UUID)
def jobs_show(job_id: uuid.UUID) -> None:
    """Everything about one job, as JSON."""

    async def work() -> dict[str, Any]:
        async with async_transaction() as session:
            return job_view(await intake.load_job(session, job_id), admin=True).plain()

    _echo_json(_run(work))


@jobs.command("retry")
@click.argument("job_id", type=click.UUID, required=False)
@_filter_options
@click.option("--force", is_flag=True, help="Also re-run succeeded jobs.")
@click.option("--all", "every", is_flag=True, help="With no --type, --since, --until or --error-code: every job.")
@click.option("--limit", default=500, show_default=True)
def jobs_retry(
    job_id: uuid.UUID | None,
    statuses: tuple[str, ...],
    types: tuple[str, ...],
    since: dt.datetime | None,
    until: dt.datetime | None,
    error_code: str | None,
    force: bool,
    every: bool,
    limit: int,
) -> None:
    """Re-run one finished job, or every job matching the filters (default --status failed; no filter needs --all)."""

    async def one(target: uuid.UUID) -> list[uuid.UUID]:
        async with async_transaction() as session:
            job = await intake.load_job(session, target)
            await intake.rerun(session, job, _actor(), force=force)
            return [target]

    async def many() -> list[uuid.UUID]:
        chosen = statuses or (JobStatus.FAILED,)
        if JobStatus.SUCCEEDED in chosen and not force:
            raise click.UsageError("re-running succeeded jobs needs --force")
        if not (types or since or until or error_code or every):
            raise click.UsageError("give a job id, --type, --since, --until or --error-code, or --all for every job")
        async with async_transaction() as session:
            return await intake.rerun_matching(
                session, _job_filter(chosen, types, since, until, error_code), _actor(), force=force, limit=limit
            )

    rerun = _run(lambda: one(job_id)) if job_id else _run(many)
    click.echo(f"re-queued {len(rerun)} job(s)")
    for target in rerun:
        click.echo(str(target))


@jobs.command("cancel")
@click.argument("job_id", type=click.UUID)
def jobs_cancel(job_id: uuid.UUID) -> None:
    """Cancel a waiting job, or ask a running one to stop."""

    async def work() -> dict[str, Any]:
        async with async_transaction() as session:
            job = await intake.load_job(session, job_id, lock=True)  # a worker's claim must not be overwritten
            return job_view(await intake.cancel(session, job, _actor())).plain()

    job = _run(work)
    click.echo(f"{job['id']} {job['status']}{' (stop requested)' if job['cancel_requested'] else ''}")


@main.group()
def webhooks() -> None:
    """Webhook endpoints and their deliveries: list, create, disable, inspect, re-send."""


@webhooks.command("list")
def webhooks_list() -> None:
    """Every client's endpoints, oldest first, with why a disabled one was disabled."""
    from roadie.webhooks import endpoints
    from roadie.webhooks.views import endpoint_view

    async def work() -> list[dict[str, Any]]:
        async with async_transaction() as session:
            return [endpoint_view(e).plain() for e in await endpoints.list_endpoints(session, None)]

    for endpoint in _run(work):
        state = "enabled" if endpoint["enabled"] else f"disabled: {endpoint['disabled_reason']}"
        click.echo(f"{endpoint['id']}  {endpoint['url']}  {','.join(endpoint['events'])}  {state}")


@webhooks.command("create")
@click.option("--client", "client_name", required=True, help="The API client (key name) the endpoint belongs to.")
@click.option("--url", required=True)
@click.option("--events", required=True, help="Comma-separated, some of: " + ", ".join(EVENT_TYPES) + ".")
@click.option("--description")
def webhooks_create(client_name: str, url: str, events: str, description: str | None) -> None:
    """Register an endpoint for a client; prints its id, then its signing secret (shown this once)."""
    from roadie.webhooks import endpoints

    async def work() -> tuple[uuid.UUID, str]:
        async with async_transaction() as session:
            client = await session.scalar(select(ApiClient).where(ApiClient.name == client_name))
            if client is None:
                raise click.ClickException(f"no API client named {client_name!r}")
            chosen = [event.strip() for event in events.split(",") if event.strip()]
            endpoint, secret = await endpoints.create(session, client, url, chosen, description)
            return endpoint.id, secret

    endpoint_id, secret = _run(work)
    click.echo(str(endpoint_id))
    click.echo(secret)


@webhooks.command("disable")
@click.argument("endpoint_id", type=click.UUID)
def webhooks_disable(endpoint_id: uuid.UUID) -> None:
    """Stop posting to an endpoint (PATCH enabled=true, or the console, enables it again)."""
    from roadie.webhooks import endpoints

    async def work() -> str | None:
        async with async_transaction() as session:
            endpoint = await endpoints.find(session, endpoint_id, None, lock=True)
            endpoint = await endpoints.update(session, endpoint, endpoints.Changes(enabled=False), _actor())
            return endpoint.disabled_reason

    click.echo(f"{endpoint_id} {_run(work)}")


@webhooks.command("deliveries")
@click.argument("endpoint_id", type=click.UUID)
@click.option("--status", "statuses", multiple=True, type=click.Choice(DELIVERY_STATUSES))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
def webhooks_deliveries(endpoint_id: uuid.UUID, statuses: tuple[str, ...], limit: int) -> None:
    """An endpoint's deliveries, newest first, each with its attempts, as JSON."""
    from roadie.webhooks import endpoints

    async def work() -> list[dict[str, Any]]:
        async with async_transaction() as session:
            endpoint = await endpoints.find(session, endpoint_id, None)
            found, _ = await endpoints.deliveries(session, endpoint, statuses=statuses, limit=limit)
            return [delivery.plain() for delivery in found]

    _echo_json(_run(work))


@webhooks.command("resend")
@click.argument("delivery_id", type=click.UUID, required=False)
@click.option(
    "--endpoint", "endpoint_id", type=click.UUID, help="With --failed: the endpoint whose deliveries to re-send."
)
@click.option("--failed", is_flag=True, help="Every failed delivery of --endpoint made in [--since, --until).")
@click.option("--since", type=click.DateTime(), help="UTC.")
@click.option("--until", type=click.DateTime(), help="UTC; default now.")
def webhooks_resend(
    delivery_id: uuid.UUID | None,
    endpoint_id: uuid.UUID | None,
    failed: bool,
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> None:
    """Re-send one delivery, or every failed delivery of an endpoint in a time range."""
    from roadie.webhooks import endpoints

    async def one(target: uuid.UUID) -> list[uuid.UUID]:
        async with async_transaction() as session:
            delivery = await endpoints.find_delivery(session, target, None)
            await endpoints.resend(session, delivery, _actor())
            return [target]

    async def many(target: uuid.UUID, start: dt.datetime) -> list[uuid.UUID]:
        end = until.replace(tzinfo=dt.UTC) if until else dt.datetime.now(dt.UTC)
        async with async_transaction() as session:
            endpoint = await endpoints.find(session, target, None, lock=True)
            return await endpoints.resend_failed(session, endpoint, start.replace(tzinfo=dt.UTC), end, _actor())

    if delivery_id is not None and endpoint_id is None and not failed:
        one_id = delivery_id
        resent = _run(lambda: one(one_id))
    elif delivery_id is None and endpoint_id is not None and failed and since is not None:
        every_of, start = endpoint_id, since
        resent = _run(lambda: many(every_of, start))
    else:
        raise click.UsageError("give a delivery id, or --endpoint ID --failed --since TIME [--until TIME]")
    click.echo(f"re-sending {len(resent)} deliver{'y' if len(resent) == 1 else 'ies'}")
    for target in resent:
        click.echo(str(target))


@main.command("status")
def status_command() -> None:
    """Health at a glance: the API, the relay's backlog, each pool's workers, queue depth and oldest
    waiting job, the chain, the IPFS node, the indexer's lag and the last hour's failures."""
    from roadie.jobs.types import QUEUES
    from roadie.settings import get_settings
    from roadie.status import gather, render

    click.echo(render(gather(get_settings()), QUEUES))


# Queue and schedule controls (issue 17): pause and resume, and beat's schedules.


@main.group()
def queues() -> None:
    """Pause and resume a pool's queue or a job type: nothing new of it starts, its jobs wait in the ledger."""


def _queue_line(state: Any) -> str:
    paused = f"PAUSED by {state.paused_by} since {state.paused_at:%Y-%m-%d %H:%M:%S} UTC" if state.paused else "running"
    why = f" ({state.reason})" if state.reason else ""
    return f"{state.kind:5} {state.name:24} {paused}{why}; held {state.held}, running {state.running}"


@queues.command("list")
def queues_list() -> None:
    """Every queue and paused job type, with its jobs held and running."""
    from roadie.jobs import pauses

    async def work() -> list[str]:
        async with async_transaction() as session:
            return [_queue_line(state) for state in await pauses.states(session)]

    for line in _run(work):
        click.echo(line)


_JOB_TYPE_FLAG = click.option("--job-type", "job_type", is_flag=True, help="NAME is a job type, not a queue.")


@queues.command("pause")
@click.argument("name")
@_JOB_TYPE_FLAG
@click.option("--reason", default=None, help="Why, for the audit trail and the console.")
def queues_pause(name: str, job_type: bool, reason: str | None) -> None:
    """Pause queue NAME (or job type NAME with --job-type); running jobs finish."""
    from roadie.jobs import pauses

    async def work() -> str:
        async with async_transaction() as session:
            return _queue_line(await pauses.pause(session, "type" if job_type else "queue", name, _actor(), reason))

    click.echo(_run(work))


@queues.command("resume")
@click.argument("name")
@_JOB_TYPE_FLAG
def queues_resume(name: str, job_type: bool) -> None:
    """Resume queue NAME (or job type NAME with --job-type): its held jobs go to the workers."""
    from roadie.jobs import pauses

    async def work() -> str:
        async with async_transaction() as session:
            return _queue_line(await pauses.resume(session, "type" if job_type else "queue", name, _actor()))

    click.echo(_run(work))


@main.group()
def schedules() -> None:
    """Beat's schedules: list them with their last and next run; run one now, disable or enable it."""


def _schedule_line(view: Any) -> str:
    def at(moment: dt.datetime | None) -> str:
        return f"{moment:%Y-%m-%d %H:%M:%S}" if moment else "-"

    state = "enabled" if view.enabled else f"DISABLED by {view.changed_by}"
    outcome = f"{view.last_outcome}: {view.last_detail}" if view.last_outcome else "-"
    return (
        f"{view.name:24} {view.schedule:12} {state:28} last {at(view.last_run_at)} ({outcome}) "
        f"next {at(view.next_run_at)}{' run requested' if view.run_requested_at else ''}"
    )


@schedules.command("list")
def schedules_list() -> None:
    """Every beat entry: schedule (UTC), enabled, last run and outcome, next run."""
    from schedules import state

    async def work() -> list[str]:
        async with async_transaction() as session:
            return [_schedule_line(view) for view in await state.list_schedules(session)]

    for line in _run(work):
        click.echo(line)


@schedules.command("run")
@click.argument("name")
def schedules_run(name: str) -> None:
    """Ask beat to run schedule NAME now; one beat takes the request within a few seconds."""
    _change_schedule(name, "run")


@schedules.command("disable")
@click.argument("name")
def schedules_disable(name: str) -> None:
    """Disable schedule NAME: no beat runs it until it is enabled."""
    _change_schedule(name, "disable")


@schedules.command("enable")
@click.argument("name")
def schedules_enable(name: str) -> None:
    """Enable schedule NAME again."""
    _change_schedule(name, "enable")


def _change_schedule(name: str, action: Literal["run", "disable", "enable"]) -> None:
    from schedules import state

    async def work() -> str:
        async with async_transaction() as session:
            return _schedule_line(await state.change(session, name, action, _actor()))

    click.echo(_run(work))


@main.group()
def indexer() -> None:
    """The chain indexer."""


@indexer.command("status")
def indexer_status() -> None:
    """Cursors of the watched addresses, unfinalized and poison rows, and the lag in slots."""
    from roadie.indexer.runner import status

    _echo_json(asyncio.run(status()))


@main.group()
def ledger() -> None:
    """The money ledger: rewards, staking, royalties, payouts."""


@ledger.command("check")
def ledger_check() -> None:
    """Verify the ledger's invariants as JSON; exit status 1 when one is broken."""
    from roadie.db import transaction
    from roadie.ledger.check import report, violations
    from roadie.settings import get_settings

    with transaction() as session:
        found = violations(session, get_settings())
    _echo_json(report(found))
    if found:
        sys.exit(1)


@ledger.command("fund")
@click.option("--amount", type=click.IntRange(min=1), required=True, help="Base units deposited to the treasury.")
@click.option("--reference", required=True, help="Unique, e.g. the deposit's signature: recorded once per reference.")
def ledger_fund(amount: int, reference: str) -> None:
    """Record tokens deposited to the treasury wallet, which funds rewards and interest."""
    from roadie.db import transaction
    from roadie.ledger.books import fund_treasury

    with transaction() as session:
        funded = fund_treasury(session, amount, reference, dt.datetime.now(dt.UTC))
    click.echo(f"treasury funded with {amount}" if funded else f"reference {reference!r} was already recorded")


if __name__ == "__main__":
    main()
