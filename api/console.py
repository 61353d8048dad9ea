"""``/admin``: the operators' console, server-rendered HTML to find failed jobs and re-run them.

An operator signs in by pasting an admin-scoped API key; the session cookie (signed, HttpOnly,
SameSite=Strict) holds a random session id and a CSRF token, never the key. The server keeps a
``console_sessions`` row per sign-in holding only the id's hash: each request looks the row and
its client up again, so signing out (the row is deleted), the row's expiry, revoking the key or
dropping its admin scope ends the session at once, even for a copy of the cookie. Every POST
form carries the session's CSRF token. Re-runs go through the same service functions as
the API (:func:`roadie.jobs.intake.rerun`, :func:`roadie.jobs.intake.rerun_matching`), so each
one is recorded as a ``rerun`` job event with the operator's client name; webhook re-sends through
:mod:`roadie.webhooks.endpoints`, as the API's.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

from jinja2 import pass_context
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.templating import Jinja2Templates

from api import console_controls, console_dashboard, console_job
from api import console_pictures as pictures
from api.errors import validation_fields
from api.http import path_uuid
from models.platform import ApiClient, ConsoleSession, Job, JobStatus
from roadie.auth import authenticate, hash_key
from roadie.db import async_transaction
from roadie.jobs import intake
from roadie.jobs.intake import IntakeError, JobFilter
from roadie.jobs.views import job_view
from roadie.ledger import payouts
from roadie.settings import get_settings
from roadie.webhooks import endpoints

log = logging.getLogger(__name__)

PATH = "/admin"
COOKIE = "roadie_admin"
SESSION_MAX_AGE_S = 8 * 3600  # one working day; then sign in again
PAGE_SIZE = 50
BULK_LIMIT = 1000  # jobs one "retry all matching" press re-runs, oldest first
LISTED_STATUSES = (JobStatus.FAILED, JobStatus.RETRYING)
ACTIVE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING, JobStatus.WAITING})
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")


@pass_context
def _path_for(context: Mapping[str, Any], name: str, /, **params: Any) -> str:
    """The path (no scheme or host) of a named console route, mount point included."""
    request: Request = context["request"]
    return request.url_for(name, **params).path


def _when(value: dt.datetime | str | None) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS UTC``; a dash when unset."""
    if not value:
        return "—"
    moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    """A stage's run time, short: ``850 ms``, ``12.4 s``, ``3 min 05 s``; a dash when it has not started."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


templates.env.globals["path_for"] = _path_for
templates.env.filters["when"] = _when
templates.env.filters["duration"] = _duration
templates.env.globals["waveform_size"] = (pictures.WAVEFORM_WIDTH, pictures.WAVEFORM_HEIGHT)
templates.env.globals["chart_size"] = (pictures.CHART_HEIGHT, pictures.CHART_LEFT, pictures.CHART_TOP)


class CsrfError(Exception):
    """A POST whose form lacks the session's CSRF token."""


class ListFilter(BaseModel):
    """The list page's filter, from query parameters (GET) or the bulk-retry form's hidden fields."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    status: Literal["failed", "retrying", "scheduled"] | None = None
    type: str | None = Field(default=None, max_length=100)
    error_code: str | None = Field(default=None, max_length=64)
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("created_after", "created_before")
    @classmethod
    def _naive_is_utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        """The form's datetime-local inputs carry no zone: they are UTC, as the page says."""
        return value.replace(tzinfo=dt.UTC) if value is not None and value.tzinfo is None else value

    def listed(self) -> JobFilter:
        """The jobs the list shows: failed and retrying ones, or one of the two, or the delayed ones."""
        statuses = (self.status,) if self.status else LISTED_STATUSES
        return JobFilter(statuses, _one(self.type), self.created_after, self.created_before, self.error_code)

    def rerunnable(self) -> JobFilter:
        """The jobs "retry all matching" re-runs: the failed ones (a retrying job is still in flight)."""
        statuses = (JobStatus.FAILED,) if self.status in (None, JobStatus.FAILED) else ()
        return JobFilter(statuses, _one(self.type), self.created_after, self.created_before, self.error_code)

    @property
    def narrowed(self) -> bool:
        """Filtered by more than status: else "retry all matching" means every failed job."""
        return bool(self.type or self.error_code or self.created_after or self.created_before)

    @property
    def bulk_possible(self) -> bool:
        return self.status in (None, JobStatus.FAILED)


def _one(value: str | None) -> tuple[str, ...]:
    return (value,) if value else ()


FILTER_FIELDS = ("status", "type", "error_code", "created_after", "created_before")


def _raw_filter(source: Mapping[str, Any]) -> dict[str, str]:
    """The filter fields as the operator typed them, to refill the form and build links."""
    return {name: value for name in FILTER_FIELDS if isinstance(value := source.get(name), str) and value.strip()}


def _parse_filter(raw: Mapping[str, str]) -> tuple[ListFilter, list[dict[str, str]]]:
    try:
        return ListFilter.model_validate(raw), []
    except ValidationError as exc:
        return ListFilter(), validation_fields(exc)


def _render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    context.setdefault("csrf_token", _csrf_token(request))
    context.setdefault("notice", request.session.pop("notice", None))
    context.setdefault("operator", None)
    return templates.TemplateResponse(request, name, context, status_code=status_code, headers=SECURITY_HEADERS)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def _notify(request: Request, text: str, kind: Literal["ok", "error"] = "ok") -> None:
    """A one-shot notice shown on the next page."""
    request.session["notice"] = {"text": text, "kind": kind}


def _csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


async def _checked_form(request: Request) -> FormData:
    """The POSTed form, if it carries this session's CSRF token; else :class:`CsrfError` (403)."""
    form = await request.form()
    sent, expected = form.get("csrf_token"), request.session.get("csrf")
    if not isinstance(sent, str) or not isinstance(expected, str) or not secrets.compare_digest(sent, expected):
        raise CsrfError
    return form


async def _operator(session: AsyncSession, request: Request) -> ApiClient | None:
    """The signed-in admin, looked up again on every request; None (and signed out) if no longer one."""
    sid = request.session.get("sid")
    if not isinstance(sid, str):
        return None
    client = await session.scalar(
        select(ApiClient)
        .join(ConsoleSession, ConsoleSession.client_id == ApiClient.id)
        .where(ConsoleSession.id_hash == hash_key(sid), ConsoleSession.expires_at > func.now())
    )
    if client is None or client.revoked_at is not None or "admin" not in client.scopes:
        request.session.pop("sid", None)
        return None
    return client


async def _open_session(session: AsyncSession, client_id: uuid.UUID) -> str:
    """A new server-side session for the client; returns its id, which only the cookie holds."""
    await session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= func.now()))  # tidy up
    sid = secrets.token_urlsafe(32)
    expires = func.now() + dt.timedelta(seconds=SESSION_MAX_AGE_S)
    session.add(ConsoleSession(id_hash=hash_key(sid), client_id=client_id, expires_at=expires))
    return sid


def _to_login(request: Request) -> RedirectResponse:
    return _redirect(request.url_for("console.login").path)


async def login_page(request: Request) -> Response:
    async with async_transaction() as session:
        if await _operator(session, request) is not None:
            return _redirect(request.url_for("console.jobs").path)
    return _render(request, "login.html", {})


async def login(request: Request) -> Response:
    form = await _checked_form(request)
    key = form.get("key")
    key = key.strip() if isinstance(key, str) else ""
    async with async_transaction() as session:
        client = await authenticate(session, key) if key else None
        if client is None:
            return _render(request, "login.html", {"error": "Unknown or revoked API key."}, status_code=401)
        if "admin" not in client.scopes:
            message = f"The key of “{client.name}” lacks the admin scope; the console needs an admin key."
            return _render(request, "login.html", {"error": message}, status_code=403)
        name = client.name
        sid = await _open_session(session, client.id)
    request.session.clear()  # a fresh session: new CSRF token, nothing carried over from before sign-in
    request.session["sid"] = sid
    request.session["csrf"] = secrets.token_urlsafe(32)
    log.info("console.login", extra={"client": name})
    return _redirect(request.url_for("console.jobs").path)


async def logout(request: Request) -> Response:
    """Ends the session on the server too: a copy of the cookie taken before is worthless afterwards."""
    await _checked_form(request)
    sid = request.session.get("sid")
    if isinstance(sid, str):
        async with async_transaction() as session:
            await session.execute(delete(ConsoleSession).where(ConsoleSession.id_hash == hash_key(sid)))
    request.session.clear()
    _notify(request, "Signed out.")
    return _to_login(request)


async def jobs_page(request: Request) -> Response:
    raw = _raw_filter(request.query_params)
    job_filter, errors = _parse_filter(raw)
    cursor = request.query_params.get("cursor") or None
    async with async_transaction() as session:
        operator = await _operator(session, request)
        if operator is None:
            return _to_login(request)
        if errors:
            context = {"operator": operator, "filter": raw, "errors": errors, "jobs": [], "next_url": None}
            return _render(request, "jobs.html", context, status_code=400)
        try:
            jobs, next_cursor = await intake.list_jobs(
                session, operator, job_filter.listed(), limit=PAGE_SIZE, cursor=cursor
            )
        except IntakeError as exc:
            errors = exc.fields or [{"field": "cursor", "reason": exc.message}]
            context = {"operator": operator, "filter": raw, "errors": errors, "jobs": [], "next_url": None}
            return _render(request, "jobs.html", context, status_code=400)
        matching = await _count(session, job_filter.listed())
        rerunnable = await _count(session, job_filter.rerunnable()) if job_filter.bulk_possible else 0
    base = request.url_for("console.jobs").path
    context = {
        "operator": operator,
        "filter": raw,
        "errors": [],
        "jobs": jobs,
        "matching": matching,
        "rerunnable": rerunnable,
        "narrowed": job_filter.narrowed,
        "bulk_limit": BULK_LIMIT,
        "first_url": f"{base}?{urlencode(raw)}" if cursor else None,
        "next_url": f"{base}?{urlencode(raw | {'cursor': next_cursor})}" if next_cursor else None,
    }
    return _render(request, "jobs.html", context)


async def _count(session: AsyncSession, job_filter: JobFilter) -> int:
    if not job_filter.statuses:
        return 0
    matching = job_filter.apply(select(Job)).with_only_columns(Job.id).subquery()
    return int(await session.scalar(select(func.count()).select_from(matching)) or 0)


async def retry_matching(request: Request) -> Response:
    form = await _checked_form(request)
    raw = _raw_filter(form)
    base = request.url_for("console.jobs").path
    job_filter, errors = _parse_filter(raw)
    async with async_transaction() as session:
        operator = await _operator(session, request)
        if operator is None:
            return _to_login(request)
        if errors or not job_filter.bulk_possible:
            _notify(request, "Nothing re-run: the filter is invalid or lists no failed jobs.", "error")
            return _redirect(f"{base}?{urlencode(raw)}")
        if not job_filter.narrowed and form.get("all") != "true":  # as the API: every failed job only when asked
            _notify(request, "Nothing re-run: with no filter, tick 'every failed job' to re-run them all.", "error")
            return _redirect(f"{base}?{urlencode(raw)}")
        job_ids = await intake.rerun_matching(
            session, job_filter.rerunnable(), operator.name, force=False, limit=BULK_LIMIT
        )
        actor = operator.name
    log.info("console.rerun_matching", extra={"client": actor, "count": len(job_ids)})
    noun = "job" if len(job_ids) == 1 else "jobs"
    _notify(request, f"Re-ran {len(job_ids)} failed {noun} matching the filter, as {actor}.")
    return _redirect(f"{base}?{urlencode(raw)}")


def _job_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["job_id"])
    except ValueError as exc:
        raise IntakeError(404, "not_found", f"no job {request.path_params['job_id']}") from exc


async def job_page(request: Request) -> Response:
    job_id = _job_id(request)
    async with async_transaction() as session:
        operator = await _operator(session, request)
        if operator is None:
            return _to_login(request)
        job = await intake.find_job(session, job_id, operator)
        owner = await session.get(ApiClient, job.client_id) if job.client_id else None
        track_id = console_job.track_id_of(job)
        current, previous = console_job.attempts_now(job)
        view = job_view(job, admin=True).plain()
        context = {
            "operator": operator,
            "job": view,
            "payload": console_job.raw_json(job.payload),
            "result": console_job.raw_json(job.result),
            "events": [
                {"kind": e.kind, "actor": e.actor, "attempt": e.attempt, "at": e.created_at, "detail": e.detail}
                for e in job.events
            ],
            "owner": owner.name if owner else None,
            "finished": job.status in JobStatus.finished(),
            "active": job.status in ACTIVE_STATUSES,
            "pipeline": console_job.pipeline(job, dt.datetime.now(dt.UTC)),
            "track": await console_job.track_panel(session, track_id) if track_id else None,
            "current_attempt": current,
            "previous_attempt": previous,
        }
    return _render(request, "job.html", context)


async def retry_one(request: Request) -> Response:
    job_id = _job_id(request)
    form = await _checked_form(request)
    force = form.get("force") == "on"
    target = request.url_for("console.job", job_id=str(job_id)).path
    async with async_transaction() as session:
        operator = await _operator(session, request)
        if operator is None:
            return _to_login(request)
        job = await intake.find_job(session, job_id, operator, lock=True)
        try:
            await intake.rerun(session, job, operator.name, force=force)
        except IntakeError as exc:
            if exc.code == "job_succeeded":
                _notify(request, "This job succeeded: tick “force” to run it again.", "error")
            else:
                _notify(request, f"Not re-run: {exc.message}.", "error")
            return _redirect(target)
        actor = operator.name
    log.info("console.rerun", extra={"client": actor, "job_id": str(job_id)})
    _notify(request, f"Re-run queued by {actor}.")
    return _redirect(target)


async def _read_only_page(
    request: Request, name: str, load: Callable[[AsyncSession], Awaitable[dict[str, Any]]]
) -> Response:
    """A page that only reads: the signed-in operator and what ``load`` finds, or the login page."""
    async with async_transaction() as session:
        operator = await _operator(session, request)
        if operator is None:
            return _to_login(request)
        context = await load(session)
    return _render(request, name, {"operator": operator, **context})


async def payout_holds_page(request: Request) -> Response:
    """Balances owed but not paid because the owner's wallet cannot receive."""

    async def load(session: AsyncSession) -> dict[str, Any]:
        return {"holds": await payouts.held(session)}

    return await _read_only_page(request, "payout_holds.html", load)


async def dashboard_page(request: Request) -> Response:
    """The last hour of the ledger as charts, and the queues now."""

    async def load(session: AsyncSession) -> dict[str, Any]:
        return {"board": await console_dashboard.dashboard(session)}

    return await _read_only_page(request, "dashboard.html", load)


# Queue and schedule controls (issue 17): what the pages show and the forms do is in api/console_controls.py.


async def queues_page(request: Request) -> Response:
    """Every queue and paused job type, with pause and resume buttons."""
    return await _read_only_page(request, "queues.html", console_controls.queues_context)


async def schedules_page(request: Request) -> Response:
    """Beat's schedules, with run-now, disable and enable buttons."""
    return await _read_only_page(request, "schedules.html", console_controls.schedules_context)


Control = Callable[[AsyncSession, ApiClient, FormData], Awaitable[str]]


async def _control(request: Request, page: str, act: Control) -> Response:
    """A control form: CSRF-checked, by the signed-in admin, then back to ``page`` with what it did."""
    form = await _checked_form(request)
    target = request.url_for(page).path
    async with async_transaction() as session:
        operator = await _operator(session, request)
        if operator is None:
            return _to_login(request)
        try:
            notice = await act(session, operator, form)
        except IntakeError as exc:  # refused before anything was written
            _notify(request, f"Nothing changed: {exc.message}.", "error")
            return _redirect(target)
        actor = operator.name
    log.info("console.control", extra={"client": actor, "path": request.url.path})
    _notify(request, notice)
    return _redirect(target)


async def pause_queue(request: Request) -> Response:
    return await _control(request, "console.queues", partial(console_controls.pause_or_resume, action="pause"))


async def resume_queue(request: Request) -> Response:
    return await _control(request, "console.queues", partial(console_controls.pause_or_resume, action="resume"))


async def drive_schedule(request: Request) -> Response:
    action = request.path_params["action"]
    if action not in ("run", "disable", "enable"):
        raise HTTPException(404, f"no schedule action {action!r}")
    return await _control(request, "console.schedules", partial(console_controls.drive_schedule, action=action))


class ResendWindow(BaseModel):
    """The "re-send every failed delivery" form: a time range, in UTC like every time on the console."""

    model_config = ConfigDict(extra="ignore")

    since: dt.datetime
    until: dt.datetime

    @field_validator("since", "until")
    @classmethod
    def _naive_is_utc(cls, value: dt.datetime) -> dt.datetime:
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _local(moment: dt.datetime) -> str:
    """A time as a datetime-local input's value (UTC, to the second)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


async def webhooks_page(request: Request) -> Response:
    """Every client's webhook endpoints, with why a disabled one was disabled and what waits or failed."""

    async def load(session: AsyncSession) -> dict[str, Any]:
        found = await endpoints.list_endpoints(session, None)
        owners = dict((await session.execute(select(ApiClient.id, ApiClient.name))).all())
        counts = await endpoints.delivery_counts(session)
        rows = [
            {"endpoint": endpoint, "owner": owners.get(endpoint.client_id), "counts": counts.get(endpoint.id, {})}
            for endpoint in found
        ]
        return {"rows": rows}

    return await _read_only_page(request, "webhooks.html", load)


async def webhook_page(request: Request) -> Response:
    """One endpoint: its deliveries, newest first, each with its attempts; re-send one, or the failed ones."""
    endpoint_id = path_uuid(request, "endpoint_id")
    cursor = request.query_params.get("cursor") or None

    async def load(session: AsyncSession) -> dict[str, Any]:
        endpoint = await endpoints.find(session, endpoint_id, None)
        owner = await session.get(ApiClient, endpoint.client_id)
        found, next_cursor = await endpoints.deliveries(session, endpoint, limit=PAGE_SIZE, cursor=cursor)
        base = request.url_for("console.webhook", endpoint_id=str(endpoint_id)).path
        now = dt.datetime.now(dt.UTC)
        return {
            "endpoint": endpoint,
            "owner": owner.name if owner else None,
            "deliveries": found,
            "since": _local(now - dt.timedelta(days=1)),
            "until": _local(now + dt.timedelta(minutes=1)),
            "first_url": base if cursor else None,
            "next_url": f"{base}?{urlencode({'cursor': next_cursor})}" if next_cursor else None,
        }

    return await _read_only_page(request, "webhook.html", load)


async def resend_delivery(request: Request) -> Response:
    endpoint_id = path_uuid(request, "endpoint_id")
    delivery_id = path_uuid(request, "delivery_id")
    await _checked_form(request)
    target = request.url_for("console.webhook", endpoint_id=str(endpoint_id)).path
    async with async_transaction() as session:
        operator = await _operator(session, request)
        if operator is None:
            return _to_login(request)
        delivery = await endpoints.find_delivery(session, delivery_id, operator, endpoint_id)
        try:
            await endpoints.resend(session, delivery, operator.name)
        except IntakeError as exc:
            _notify(request, f"Not re-sent: {exc.message}.", "error")
            return _redirect(target)
        actor = operator.name
    _notify(request, f"Delivery {str(delivery_id)[:8]}… re-sent by {actor}.")
    return _redirect(target)


async def resend_failed(request: Request) -> Response:
    endpoint_id = path_uuid(request, "endpoint_id")
    form = await _checked_form(request)
    target = request.url_for("console.webhook", endpoint_id=str(endpoint_id)).path
    try:
        window = ResendWindow.model_validate({"since": form.get("since"), "until": form.get("until")})
    except ValidationError as exc:
        reasons = "; ".join(f"{f['field']}: {f['reason']}" for f in validation_fields(exc))
        _notify(request, f"Nothing re-sent: {reasons}.", "error")
        return _redirect(target)
    async with async_transaction() as session:
        operator = await _operator(session, request)
        if operator is None:
            return _to_login(request)
        endpoint = await endpoints.find(session, endpoint_id, operator, lock=True)
        try:
            resent = await endpoints.resend_failed(session, endpoint, window.since, window.until, operator.name)
        except IntakeError as exc:
            _notify(request, f"Nothing re-sent: {exc.message}.", "error")
            return _redirect(target)
        actor = operator.name
    noun = "delivery" if len(resent) == 1 else "deliveries"
    _notify(
        request, f"Re-sent {len(resent)} failed {noun} made {_when(window.since)} to {_when(window.until)}, as {actor}."
    )
    return _redirect(target)


async def on_csrf_refused(request: Request, exc: Exception) -> Response:
    message = "This form is stale or did not come from this console: reload the page and try again."
    return _render(request, "error.html", {"title": "Form refused", "message": message}, status_code=403)


async def on_intake_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IntakeError)
    return _render(request, "error.html", {"title": "Not possible", "message": exc.message}, status_code=exc.status)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Refused")
    return _render(request, "error.html", {"title": title, "message": str(exc.detail)}, status_code=exc.status_code)


async def on_unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("console.unhandled_error", extra={"path": request.url.path})
    message = "Something went wrong on our side; the error is in the API's log."
    context = {"title": "Internal error", "message": message, "csrf_token": "", "notice": None}
    return templates.TemplateResponse(request, "error.html", context, status_code=500, headers=SECURITY_HEADERS)


def _session_secret() -> str:
    secret = get_settings().admin_session_secret
    if secret is not None and secret.get_secret_value():
        return secret.get_secret_value()
    log.warning("console.ephemeral_session_secret")  # sessions end when this process stops
    return secrets.token_urlsafe(32)


def create_console() -> Starlette:
    """The console as its own app: HTML errors, and a session cookie scoped to its path."""
    return Starlette(
        routes=[
            Route("/", jobs_page, name="console.jobs"),
            Route("/login", login_page, name="console.login", methods=["GET"]),
            Route("/login", login, name="console.login_submit", methods=["POST"]),
            Route("/logout", logout, name="console.logout", methods=["POST"]),
            Route("/jobs/retry", retry_matching, name="console.retry_matching", methods=["POST"]),
            Route("/jobs/{job_id}", job_page, name="console.job"),
            Route("/jobs/{job_id}/retry", retry_one, name="console.retry_one", methods=["POST"]),
            Route("/payout-holds", payout_holds_page, name="console.payout_holds"),
            Route("/dashboard", dashboard_page, name="console.dashboard"),
            Route("/queues", queues_page, name="console.queues"),
            Route("/queues/pause", pause_queue, name="console.pause", methods=["POST"]),
            Route("/queues/resume", resume_queue, name="console.resume", methods=["POST"]),
            Route("/schedules", schedules_page, name="console.schedules"),
            Route("/schedules/{action}", drive_schedule, name="console.drive_schedule", methods=["POST"]),
            Route("/webhooks", webhooks_page, name="console.webhooks"),
            Route("/webhooks/{endpoint_id}", webhook_page, name="console.webhook"),
            Route(
                "/webhooks/{endpoint_id}/deliveries/{delivery_id}/resend",
                resend_delivery,
                name="console.resend_delivery",
                methods=["POST"],
            ),
            Route(
                "/webhooks/{endpoint_id}/resend-failed", resend_failed, name="console.resend_failed", methods=["POST"]
            ),
        ],
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=_session_secret(),
                session_cookie=COOKIE,
                max_age=SESSION_MAX_AGE_S,
                path=PATH,
                same_site="strict",
            )
        ],
        exception_handlers={
            CsrfError: on_csrf_refused,
            IntakeError: on_intake_error,
            HTTPException: on_http_error,
            Exception: on_unexpected_error,
        },
    )


def mount() -> Mount:
    """``Mount`` for the API's routes: the console under ``/admin``."""
    return Mount(PATH, app=create_console())
