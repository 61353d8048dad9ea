"""Request plumbing shared by the endpoints: bounded JSON bodies, auth and scopes, sessions."""

from __future__ import annotations

import json
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


async def read_json(request: Request) -> Any:
    """The body as JSON: 413 past the size limit (even without Content-Length), 400 if malformed."""
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
    try:
        data = json.loads(b"".join(chunks) or b"null", parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise IntakeError(400, "malformed_json", f"request body is not valid JSON: {exc}") from exc
    if _has_nul(data):
        raise IntakeError(400, "malformed_json", "request body contains a NUL character (\\u0000)")
    return data


def _has_nul(data: Any) -> bool:
    """PostgreSQL's jsonb cannot store U+0000 in keys or strings."""
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, str) and "\x00" in item:
            return True
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _reject_constant(name: str) -> None:
    """NaN and Infinity are not JSON, and PostgreSQL's jsonb refuses them."""
    raise ValueError(f"{name} is not a JSON value")


def parse(model: type[M], data: Any, prefix: str = "") -> M:
    """Validate data against a model, as a 422 naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, prefix) from exc


async def require(session: AsyncSession | None, request: Request, scope: str) -> ApiClient:
    """The calling client, which must hold ``scope`` (admins hold every scope): else 401 or 403.

    Without a session, a key the process has not seen recently is looked up in a transaction of its own.
    """
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise IntakeError(401, "unauthenticated", "send an API key as 'Authorization: Bearer <key>'")
    client = await authenticate(session, token.strip())
    if client is None:
        raise IntakeError(401, "unauthenticated", "unknown or revoked API key")
    if scope not in client.scopes and "admin" not in client.scopes:
        raise IntakeError(403, "forbidden", f"this key lacks the '{scope}' scope")
    return client


def path_uuid(request: Request, name: str = "job_id") -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params[name])
    except ValueError as exc:
        raise IntakeError(404, "not_found", f"no job {request.path_params[name]}") from exc


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")
