"""Every refusal is JSON: ``{"error": {"code", "message", "fields": [{"field", "reason"}]}}``."""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from roadie.jobs.intake import IntakeError
from roadie.logs import current_request_id

log = logging.getLogger(__name__)

JSON = "application/json"


class FieldError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str
    reason: str


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    message: str
    fields: list[FieldError]


class Error(BaseModel):
    """A refusal: what was wrong, and which fields (dotted paths, ``payload.sleep_ms``)."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


def error_response(
    status: int, code: str, message: str, fields: list[dict[str, str]] | None = None, **headers: str
) -> Response:
    body = Error(error=ErrorDetail.model_validate({"code": code, "message": message, "fields": fields or []}))
    return json_response(body, status, headers or None)


def json_response(body: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """The model as the response's JSON: fields it was not given (parts of a job not loaded) are left out."""
    return Response(body.__pydantic_serializer__.to_json(body, exclude_unset=True), status, headers, JSON)


def validation_fields(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """Pydantic errors as (dotted field path, reason) pairs."""
    fields = []
    for error in exc.errors(include_url=False):
        path = ".".join(str(part) for part in (prefix, *error["loc"]) if part != "")
        fields.append({"field": path or "body", "reason": error["msg"]})
    return fields


def validation_error(exc: ValidationError, prefix: str = "") -> IntakeError:
    fields = validation_fields(exc, prefix)
    summary = "; ".join(f"{f['field']}: {f['reason']}" for f in fields)
    return IntakeError(422, "validation_error", f"invalid request: {summary}", fields)


async def on_intake_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IntakeError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    return error_response(exc.status, exc.code, exc.message, exc.fields, **headers, **exc.headers)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = {"Allow": _allowed_methods(request)} if exc.status_code == 405 else {}
    return error_response(exc.status_code, code, str(exc.detail), None, **headers)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves on this path (several routes may share one, one per method)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE and isinstance(route, Route) and route.methods:
            methods |= route.methods
    return ", ".join(sorted(methods))


async def on_client_disconnect(request: Request, exc: Exception) -> Response:
    """The client went away mid-request: nothing is wrong on our side, and nobody reads the answer."""
    log.info("api.client_disconnected", extra={"path": request.url.path})
    return error_response(400, "client_disconnected", "the client closed the connection before the body arrived")


async def on_dependency_unavailable(request: Request, exc: Exception) -> Response:
    """503 with Retry-After: a service the API needs (the database) did not answer in time. Not our fault,
    so no traceback; a retry with the same Idempotency-Key may get past it."""
    log.warning("api.dependency_unavailable", extra={"path": request.url.path, "error": type(exc).__name__})
    response = error_response(
        503,
        "unavailable",
        "a service the API depends on did not answer in time; the request may not have been stored: "
        "retry it, with the same Idempotency-Key",
    )
    response.headers["Retry-After"] = "1"
    return response


async def on_unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("api.unhandled_error", extra={"path": request.url.path})
    response = error_response(500, "internal_error", "internal error")
    request_id = current_request_id()  # this handler answers outside the request-id middleware
    if request_id:
        response.headers["X-Request-ID"] = request_id
    return response
