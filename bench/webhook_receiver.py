"""The webhooks benchmark's receiver: ``uvicorn bench.webhook_receiver:app``, one process for both sides.

``POST /hooks`` verifies the Standard Webhooks signature with the ``standardwebhooks`` package (the
secret from ``ROADIE_BENCH_WEBHOOK_SECRET``), notes the ``webhook-id`` and the arrival time
(``time.time()``, the clock Postgres's ``now()`` reads too) and answers 204. ``GET /received``
lists what arrived since the last ``DELETE /received`` (``GET /received/count``: how many, cheaply).
A POST that does not verify is counted and answered 400, so a side that signs wrongly cannot pass
for a fast one.
"""

from __future__ import annotations

import os
import time

from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

VERIFIER = Webhook(os.environ["ROADIE_BENCH_WEBHOOK_SECRET"])
arrivals: list[tuple[str, float]] = []
unverified: list[str] = []  # the webhook-id of each POST that did not verify


async def hooks(request: Request) -> Response:
    body = await request.body()
    try:
        VERIFIER.verify(body, dict(request.headers))
    except WebhookVerificationError:
        unverified.append(request.headers.get("webhook-id", ""))
        return Response(status_code=400)
    arrivals.append((request.headers["webhook-id"], time.time()))
    return Response(status_code=204)


async def received(request: Request) -> Response:
    if request.method == "DELETE":
        arrivals.clear()
        unverified.clear()
        return Response(status_code=204)
    return JSONResponse({"arrivals": arrivals, "unverified": len(unverified)})


async def count(request: Request) -> Response:
    return Response(str(len(arrivals)), media_type="text/plain")


app = Starlette(
    routes=[
        Route("/hooks", hooks, methods=["POST"]),
        Route("/received", received, methods=["GET", "DELETE"]),
        Route("/received/count", count),
    ]
)
