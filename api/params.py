"""Query and path parameter types shared by the routes, so each value is checked one way everywhere.

A value PostgreSQL cannot hold (an id past bigint, a NUL in text) is a 422 naming the parameter here,
never a database error (a 500) later.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, TypeAdapter, ValidationError
from starlette.requests import Request

from api.errors import validation_error

BIGINT_MAX = 2**63 - 1


def _no_nul(value: str) -> str:
    """PostgreSQL text cannot hold U+0000."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


#: A row id: a positive PostgreSQL bigint.
BigIntId = Annotated[int, Field(ge=1, le=BIGINT_MAX)]
#: A cursor that may start before the first row.
BigIntCursor = Annotated[int, Field(ge=0, le=BIGINT_MAX)]
#: A text filter compared with a column.
TextFilter = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_no_nul)]


def _iso_8601(value: object) -> object:
    """Only an ISO 8601 string is a time here (pydantic alone would read ``0.5`` as seconds since 1970)."""
    if not isinstance(value, str):
        return value
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError("must be an ISO 8601 date-time with its UTC offset") from exc
    if parsed.tzinfo is None:
        return parsed  # AwareDatetime names the missing offset
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError as exc:
        raise ValueError("is out of range in UTC") from exc


#: An amount of money in integer base units, as a JSON string (a double would round it).
BaseUnits = Annotated[str, Field(pattern=r"^-?[0-9]+$", description="Integer base units, as a string.")]

#: A point in time with its zone (an ISO 8601 string), in UTC.
Timestamp = Annotated[AwareDatetime, BeforeValidator(_iso_8601)]

_BIGINT_ID: TypeAdapter[int] = TypeAdapter(BigIntId)


def path_bigint(request: Request, name: str) -> int:
    """A numeric path parameter as a bigint id, or a 422 naming it."""
    try:
        return _BIGINT_ID.validate_python(request.path_params[name], strict=False)
    except ValidationError as exc:
        raise validation_error(exc, name) from exc
