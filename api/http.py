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
        return json.loads(b"".join(chunks) or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntakeError(400, "malformed_json", f"request body is not valid JSON: {exc}") from exc


def parse(model: type[M], data: Any, prefix: str = "") -> M:
    """Validate data against a model, as a 422 naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, prefix) from exc


async def require(session: AsyncSession, request: Request, scope: str) -> ApiClient:
    """The calling client, which must hold ``scope`` (admins hold every scope): else 401 or 403."""
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
