"""Track upload intake: ``POST /v1/tracks`` (issue 3)."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
