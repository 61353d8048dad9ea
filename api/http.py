"""Request plumbing shared by the endpoints: bounded JSON bodies, auth and scopes, sessions."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from api.errors import validation_error
from models.platform import ApiClient
from roadie.auth import authenticate
from roadie.jobs.intake import IntakeError
from roadie.settings import get_settings

M = TypeVar("M", bound=BaseModel)


async def read_json(request: Request, empty: Any = None) -> Any:
    """The body as JSON (``empty`` when there is none), read only once the caller has authenticated the request.

    415 unless a non-empty body is declared ``application/json``; 413 past the size limit (even
    without Content-Length); 400 if it is not JSON PostgreSQL's jsonb can store.
    """
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    json_declared = media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )
    if media_type and not json_declared:
        raise _unsupported_media_type(media_type)
    limit = get_settings().max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise IntakeError(413, "body_too_large", f"request body exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise IntakeError(413, "body_too_large", f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        return empty
    if not json_declared:
        raise _unsupported_media_type("no Content-Type")
    return decode_json(raw)


def _unsupported_media_type(media_type: str) -> IntakeError:
    return IntakeError(
        415,
        "unsupported_media_type",
        f"the body must be application/json, not {media_type}",
        [{"field": "Content-Type", "reason": "must be application/json"}],
    )


def decode_json(raw: bytes, prefix: str = "", status: int = 400) -> Any:
    """JSON that PostgreSQL's jsonb can store, or an error (400, or ``status``) naming where it is not.

    Fields are named as pydantic's are: ``payload.x`` in a body, ``metadata.title`` with prefix ``metadata``.
    """
    try:
        data = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _malformed(prefix or "body", status, f"not valid JSON: {exc}") from exc
    pending: list[tuple[tuple[str, ...], Any]] = [((prefix,) if prefix else (), data)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if problem := _unstorable(key):
                    raise _malformed(".".join(path) or "body", status, f"a key {problem}")
                pending.append(((*path, key), value))
        elif isinstance(item, list):
            pending.extend(((*path, str(index)), value) for index, value in enumerate(item))
        elif isinstance(item, str) and (problem := _unstorable(item)):
            raise _malformed(".".join(path) or "body", status, problem)
    return data


def _malformed(field: str, status: int, reason: str) -> IntakeError:
    code = "malformed_json" if status == 400 else "validation_error"
    return IntakeError(status, code, f"{field}: {reason}", [{"field": field, "reason": reason}])


def _unstorable(text: str) -> str | None:
    """Why jsonb cannot store this string (a U+0000 or a lone UTF-16 surrogate), or None."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which PostgreSQL cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone UTF-16 surrogate, which is not Unicode text"
    return None


def _reject_constant(name: str) -> None:
    """NaN and Infinity are not JSON, and PostgreSQL's jsonb refuses them."""
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float | int:
    """A number, refused when too large for a double (``1e400`` would become Infinity, which jsonb refuses).

    One with no fraction (``359.0``) is the integer it equals, as JSON Schema counts it.
    """
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return int(value) if value.is_integer() else value


def parse(model: type[M], data: Any, prefix: str = "") -> M:
    """Validate query parameters or headers (strings) against a model, as a 422 naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, prefix) from exc


def parse_body(model: type[M], data: Any, prefix: str = "") -> M:
    """Validate decoded JSON against a model with no coercion (``"yes"`` is no bool, ``"100"`` no int).

    Strict in JSON mode, where a UUID or a timestamp is still a string: a 422 naming each bad field.
    """
    try:
        return model.model_validate_json(json.dumps(data), strict=True)
    except ValidationError as exc:
        raise validation_error(exc, prefix) from exc


async def require(session: AsyncSession | None, request: Request, scope: str, *or_scopes: str) -> ApiClient:
    """The calling client, which must hold ``scope`` or one of ``or_scopes`` (admins hold every scope): else 401 or 403.

    Without a session, a key the process has not seen recently is looked up in a transaction of its own.
    """
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise IntakeError(401, "unauthenticated", "send an API key as 'Authorization: Bearer <key>'")
    client = await authenticate(session, token.strip())
    if client is None:
        raise IntakeError(401, "unauthenticated", "unknown or revoked API key")
    require_scope(client, scope, or_scopes=or_scopes)
    return client


def require_scope(client: ApiClient, scope: str, what: str = "this call", *, or_scopes: tuple[str, ...] = ()) -> None:
    """403 unless the client holds ``scope`` or one of ``or_scopes``; admins hold every scope."""
    wanted = (scope, *or_scopes)
    if not set(wanted) & set(client.scopes) and "admin" not in client.scopes:
        needed = " or ".join(f"'{name}'" for name in wanted)
        raise IntakeError(403, "forbidden", f"{what} needs the {needed} scope, which this key lacks")


def path_uuid(request: Request, name: str = "job_id") -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params[name])
    except ValueError as exc:
        raise IntakeError(404, "not_found", f"no {name.removesuffix('_id')} {request.path_params[name]}") from exc


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")
