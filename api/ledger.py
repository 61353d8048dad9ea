"""Listening events, sales, ledger accounts and payouts (issue 5)."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
