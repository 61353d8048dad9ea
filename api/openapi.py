"""``/openapi.json`` from the models that validate requests and build responses, and ``/docs`` to read it.

Every schema in the document is a pydantic model's (or a type's) own JSON schema; what is written here
is only the table of operations: method, path, scope, which model each part of a request and each
answer is. ``/docs`` is Swagger UI, served from the files the ``openapi-ui-bundles`` package ships.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from typing import Any, Literal

import openapi_ui_bundles.swagger_ui
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from api.admin import PayoutHolds, Rerunning, RetryMany, RetryOne
from api.batches import BatchView
from api.errors import Error
from api.health import Health, Readiness
from api.jobs import IdempotencyKeyHeader, JobPage, ListQuery, job_request_adapter
from api.ledger import AccountView, EntriesQuery, PayoutPage, PayoutQuery, PlayReceipt, SaleRequest, SaleView
from api.params import BigIntId
from api.queues import PauseRequest, QueueState, QueueStates
from api.quotas import QuotaChange, QuotaView
from api.schedules import ScheduleList, ScheduleView
from api.tracks import TrackAccepted, TrackUpload
from api.webhooks import DeliveryQuery, EndpointChange, EndpointRequest, ResendFailed
from roadie.jobs.batches import BatchRequest
from roadie.jobs.views import JobView
from roadie.ledger.plays import PlayBatch
from roadie.webhooks.views import CreatedEndpoint, DeliveryPage, EndpointList, EndpointView, Resent, RotatedSecret

REF_TEMPLATE = "#/components/schemas/{model}"

#: The refusals any authenticated operation may answer (see api/errors.py); 503: the database did not answer in time.
ERRORS = (400, 401, 403, 404, 405, 409, 413, 415, 422, 503)
#: Intake also answers 429 (with Retry-After) to a client over its quota.
OVER_QUOTA = (*ERRORS, 429)


@dataclass(frozen=True)
class Param:
    """A path or header parameter, whose schema is its type's."""

    name: str
    location: Literal["path", "header"]
    type: Any
    description: str = ""


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    #: Status to the model of its body (None: no body); the refusals in ``errors`` are added, as Error.
    responses: Mapping[int, type[BaseModel] | None]
    #: The scope a key needs; None for an operation that needs no key.
    scope: str | None = None
    #: The JSON body's model (or a TypeAdapter of a union); ``form`` for multipart/form-data instead.
    body: type[BaseModel] | TypeAdapter[Any] | None = None
    body_required: bool = True
    form: type[BaseModel] | None = None
    #: The query parameters: this model's fields.
    query: type[BaseModel] | None = None
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ERRORS


JOB_ID = Param("job_id", "path", uuid.UUID)
BATCH_ID = Param("batch_id", "path", uuid.UUID)
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key", "header", IdempotencyKeyHeader, "The same key and body within its lifetime replay the job."
)
QUEUE = Param("queue", "path", str, "A pool's queue: media, ipfs, chain, ledger, indexer or default")
JOB_TYPE = Param("job_type", "path", str, "A job type's name, such as nft.mint")
CLIENT = Param("name", "path", str, "An API key's client name, as `roadie keys list` shows it")
SCHEDULE = Param("name", "path", str, "A beat entry's name, as GET /v1/admin/schedules lists them")
ENDPOINT_ID = Param("endpoint_id", "path", uuid.UUID)
DELIVERY_ID = Param("delivery_id", "path", uuid.UUID)
WEBHOOKS_READ = "webhooks:read or webhooks:write"
ACCOUNT_ID = Param(
    "account_id", "path", Literal["treasury", "clearing", "external"] | BigIntId, "Numeric id, or a system account"
)


@cache
def operations() -> tuple[Operation, ...]:
    """Every operation of the API but ``/metrics`` (for Prometheus) and the console (HTML)."""
    return (
        Operation("get", "/healthz", "Liveness", {200: Health}, errors=()),
        Operation("get", "/readyz", "Database and broker reachable", {200: Readiness, 503: Readiness}, errors=()),
        Operation(
            "post",
            "/v1/jobs",
            "Submit a job; 202 again, replayed, for the same Idempotency-Key and body",
            {202: JobView},
            "jobs:write",
            body=job_request_adapter(),
            params=(IDEMPOTENCY_KEY,),
            errors=OVER_QUOTA,
        ),
        Operation("get", "/v1/jobs", "List jobs, newest first", {200: JobPage}, "jobs:read", query=ListQuery),
        Operation("get", "/v1/jobs/{job_id}", "A job", {200: JobView}, "jobs:read", params=(JOB_ID,)),
        Operation(
            "post",
            "/v1/jobs/{job_id}/cancel",
            "Cancel a job, or ask a running one to stop",
            {202: JobView},
            "jobs:write",
            params=(JOB_ID,),
        ),
        Operation(
            "post",
            "/v1/batches",
            "Submit up to 1,000 jobs in one transaction; batch.completed is sent once when the last ends",
            {202: BatchView},
            "jobs:write",
            body=BatchRequest,
            params=(IDEMPOTENCY_KEY,),
            errors=OVER_QUOTA,
        ),
        Operation(
            "get",
            "/v1/batches/{batch_id}",
            "A batch and its jobs by status",
            {200: BatchView},
            "jobs:read",
            params=(BATCH_ID,),
        ),
        Operation(
            "post",
            "/v1/tracks",
            "Upload a track; 202 with its track.ingest job",
            {202: TrackAccepted},
            "tracks:write",
            form=TrackUpload,
            params=(IDEMPOTENCY_KEY,),
            errors=OVER_QUOTA,
        ),
        Operation(
            "post",
            "/v1/admin/jobs/{job_id}/retry",
            "Re-run a finished job",
            {202: JobView},
            "admin",
            body=RetryOne,
            body_required=False,
            params=(JOB_ID,),
        ),
        Operation(
            "post", "/v1/admin/jobs/retry", "Re-run finished jobs by filter", {202: Rerunning}, "admin", body=RetryMany
        ),
        Operation(
            "get",
            "/v1/admin/payout-holds",
            "Balances owed but held because the owner's wallet cannot receive",
            {200: PayoutHolds},
            "admin",
        ),
        *_control_operations(),
        Operation(
            "post",
            "/v1/plays",
            "Store up to 1,000 listening events, once per event_id",
            {200: PlayReceipt},
            "plays:write",
            body=PlayBatch,
        ),
        Operation(
            "post",
            "/v1/sales",
            "Record an NFT sale and split its royalty among the creators; 200 if its signature was recorded before",
            {201: SaleView, 200: SaleView},
            "sales:write",
            body=SaleRequest,
        ),
        Operation(
            "get",
            "/v1/ledger/accounts/{account_id}",
            "An account's balance and entries, newest first",
            {200: AccountView},
            "ledger:read",
            query=EntriesQuery,
            params=(ACCOUNT_ID,),
        ),
        Operation(
            "get",
            "/v1/payouts",
            "Payouts by period, account and status, oldest first",
            {200: PayoutPage},
            "ledger:read",
            query=PayoutQuery,
        ),
        Operation(
            "post",
            "/v1/webhooks",
            "Register a webhook endpoint; its signing secret is in this answer only",
            {201: CreatedEndpoint},
            "webhooks:write",
            body=EndpointRequest,
        ),
        Operation(
            "get", "/v1/webhooks", "Webhook endpoints (an admin's: every client's)", {200: EndpointList}, WEBHOOKS_READ
        ),
        Operation(
            "get",
            "/v1/webhooks/{endpoint_id}",
            "A webhook endpoint",
            {200: EndpointView},
            WEBHOOKS_READ,
            params=(ENDPOINT_ID,),
        ),
        Operation(
            "patch",
            "/v1/webhooks/{endpoint_id}",
            "Change a webhook endpoint's url, events, description, or enable or disable it",
            {200: EndpointView},
            "webhooks:write",
            body=EndpointChange,
            body_required=False,  # no body changes nothing
            params=(ENDPOINT_ID,),
        ),
        Operation(
            "delete",
            "/v1/webhooks/{endpoint_id}",
            "Delete a webhook endpoint and its deliveries",
            {204: None},
            "webhooks:write",
            params=(ENDPOINT_ID,),
        ),
        Operation(
            "post",
            "/v1/webhooks/{endpoint_id}/rotate-secret",
            "A new signing secret, in this answer only; the old one signs beside it for the overlap",
            {200: RotatedSecret},
            "webhooks:write",
            params=(ENDPOINT_ID,),
        ),
        Operation(
            "get",
            "/v1/webhooks/{endpoint_id}/deliveries",
            "An endpoint's deliveries, newest first, each with its attempts",
            {200: DeliveryPage},
            WEBHOOKS_READ,
            query=DeliveryQuery,
            params=(ENDPOINT_ID,),
        ),
        Operation(
            "post",
            "/v1/webhooks/{endpoint_id}/deliveries/{delivery_id}/resend",
            "Send a delivered or failed delivery again",
            {202: Resent},
            "webhooks:write",
            params=(ENDPOINT_ID, DELIVERY_ID),
        ),
        Operation(
            "post",
            "/v1/webhooks/{endpoint_id}/resend-failed",
            "Send again every failed delivery of the endpoint made in a time range",
            {202: Resent},
            "webhooks:write",
            body=ResendFailed,
            params=(ENDPOINT_ID,),
        ),
    )


def _control_operations() -> tuple[Operation, ...]:
    """Pausing queues and job types, and driving beat's schedules (admin)."""
    pausing = tuple(
        Operation(
            "post",
            f"/v1/admin/{path}/{{{param.name}}}/{action}",
            f"{action.capitalize()} a {what}: {effect}",
            {200: QueueState},
            "admin",
            body=PauseRequest if action == "pause" else None,
            body_required=False,
            params=(param,),
        )
        for path, param, what in (("queues", QUEUE, "queue"), ("job-types", JOB_TYPE, "job type"))
        for action, effect in (
            ("pause", "nothing new of it starts, its jobs wait in the ledger"),
            ("resume", "its held jobs go to the workers"),
        )
    )
    driving = tuple(
        Operation(
            "post",
            f"/v1/admin/schedules/{{name}}/{action}",
            summary,
            {status: ScheduleView},
            "admin",
            params=(SCHEDULE,),
        )
        for action, summary, status in (
            ("run", "Ask beat to run a schedule now (one beat runs it)", 202),
            ("disable", "Disable a schedule: beat runs it no more", 200),
            ("enable", "Enable a schedule again", 200),
        )
    )
    quota = (
        Operation(
            "get",
            "/v1/admin/clients/{name}/quota",
            "An API client's quota",
            {200: QuotaView},
            "admin",
            params=(CLIENT,),
        ),
        Operation(
            "put",
            "/v1/admin/clients/{name}/quota",
            "Set an API client's quota of accepted jobs; in force within the key cache's seconds",
            {200: QuotaView},
            "admin",
            body=QuotaChange,
            params=(CLIENT,),
        ),
    )
    listing = (
        Operation("get", "/v1/admin/queues", "Every queue and paused job type", {200: QueueStates}, "admin"),
        Operation(
            "get",
            "/v1/admin/schedules",
            "Beat's schedules with their last run, outcome and next run",
            {200: ScheduleList},
            "admin",
        ),
    )
    return (*listing, *pausing, *driving, *quota)


def schema_sources() -> list[tuple[type[BaseModel] | TypeAdapter[Any], JsonSchemaMode]]:
    """Every model (or adapter) whose schema is in the document, with the mode it is read in."""
    sources: list[tuple[type[BaseModel] | TypeAdapter[Any], JsonSchemaMode]] = [(Error, "serialization")]
    for op in operations():
        sources += [(model, "serialization") for model in op.responses.values() if model is not None]
        sources += [(model, "validation") for model in (op.body, op.form) if model is not None]
    return sources


def _adapter(source: type[BaseModel] | TypeAdapter[Any]) -> TypeAdapter[Any]:
    return source if isinstance(source, TypeAdapter) else TypeAdapter(source)


def _describe(status: int, model: type[BaseModel]) -> str:
    """The model's docstring, or the status's reason phrase."""
    return (model.__doc__ or HTTPStatus(status).phrase).strip()


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params = [
        {
            "name": p.name,
            "in": p.location,
            "required": p.location == "path",
            "schema": TypeAdapter(p.type).json_schema(),
            **({"description": p.description} if p.description else {}),
        }
        for p in op.params
    ]
    if op.query is not None:
        query = op.query.model_json_schema()
        params += [
            {"name": name, "in": "query", "required": name in query.get("required", ()), "schema": schema}
            for name, schema in query["properties"].items()
        ]
    return params


@cache
def openapi_spec() -> dict[str, Any]:
    sources = schema_sources()
    refs, defs = TypeAdapter.json_schemas(
        [(id(source), mode, _adapter(source)) for source, mode in sources], ref_template=REF_TEMPLATE
    )

    def schema(source: type[BaseModel] | TypeAdapter[Any], mode: JsonSchemaMode) -> dict[str, Any]:
        return refs[(id(source), mode)]

    def content(media_type: str, body: dict[str, Any], description: str) -> dict[str, Any]:
        return {"description": description, "content": {media_type: {"schema": body}}}

    paths: dict[str, dict[str, Any]] = {}
    for op in operations():
        operation: dict[str, Any] = {
            "summary": op.summary + (f" (scope {op.scope})" if op.scope else ""),
            "responses": {
                **{
                    str(status): content("application/json", schema(model, "serialization"), _describe(status, model))
                    if model is not None
                    else {"description": HTTPStatus(status).phrase}
                    for status, model in op.responses.items()
                },
                **{str(status): {"$ref": "#/components/responses/Error"} for status in op.errors},
            },
        }
        if op.scope is None:
            operation["security"] = []
        if parameters := _parameters(op):
            operation["parameters"] = parameters
        if op.body is not None:
            operation["requestBody"] = {
                "required": op.body_required,
                "content": {"application/json": {"schema": schema(op.body, "validation")}},
            }
        if op.form is not None:
            form = {
                "schema": schema(op.form, "validation"),
                "encoding": {"metadata": {"contentType": "application/json"}},
            }
            operation["requestBody"] = {"required": True, "content": {"multipart/form-data": form}}
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Roadie intake API", "version": "1"},
        "components": {
            "schemas": defs.get("$defs", {}),
            "responses": {"Error": content("application/json", schema(Error, "serialization"), "Refused.")},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


async def openapi(request: Request) -> JSONResponse:
    """The document; like ``/docs``, readable without a key."""
    return JSONResponse(openapi_spec())


DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Roadie intake API</title>
<link rel="stylesheet" href="{css}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{bundle}"></script>
<script>SwaggerUIBundle({{url: "{spec}", dom_id: "#swagger-ui"}});</script>
</body>
</html>
"""


async def docs(request: Request) -> HTMLResponse:
    """Swagger UI over ``/openapi.json``, every file from this server (no CDN)."""

    def asset(name: str) -> str:
        return request.url_for("docs-assets", path=name).path

    page = DOCS_PAGE.format(
        css=asset("swagger-ui.css"), bundle=asset("swagger-ui-bundle.js"), spec=request.url_for("openapi").path
    )
    return HTMLResponse(page)


routes: list[BaseRoute] = [
    Route("/openapi.json", openapi, name="openapi"),
    Route("/docs", docs),
    Mount("/docs/assets", StaticFiles(directory=openapi_ui_bundles.swagger_ui.static_path), name="docs-assets"),
]
