"""``/openapi.json``: every endpoint, and the payload schema of every job type."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from api.admin import RetryMany, RetryOne
from api.jobs import JobRequest
from api.params import BIGINT_MAX
from roadie.ingest.upload import TrackFields
from roadie.jobs.types import job_types

REF_TEMPLATE = "#/components/schemas/{model}"


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


def _error() -> dict[str, Any]:
    return {"$ref": "#/components/responses/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_spec() -> dict[str, Any]:
    components: dict[str, Any] = {}
    variants = []
    for name, job_type in sorted(job_types().items()):
        payload_ref = _schema(job_type.payload_model, components)
        variant = f"JobRequest.{name}"
        components[variant] = {
            "type": "object",
            "description": job_type.description,
            "required": ["type", "payload"],
            "additionalProperties": False,
            "properties": {"type": {"const": name}, "payload": payload_ref},
        }
        variants.append({"$ref": REF_TEMPLATE.format(model=variant)})
    _schema(JobRequest, components)
    components["Job"] = {
        "type": "object",
        "description": "A job in the ledger.",
        "additionalProperties": True,
        "required": ["id", "url", "type", "status"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "url": {"type": "string"},
            "type": {"type": "string"},
            "status": {"type": "string"},
        },
    }
    components["Error"] = {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "fields": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
                        },
                    },
                },
            }
        },
    }
    job = {"$ref": "#/components/schemas/Job"}
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
    idempotency_key = {
        "name": "Idempotency-Key",
        "in": "header",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
    }
    errors = {str(code): _error() for code in (400, 401, 403, 404, 405, 409, 413, 415, 422)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Roadie intake API", "version": "1"},
        "components": {
            "schemas": components,
            "responses": {"Error": _json({"$ref": "#/components/schemas/Error"}, "The request was refused.")},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "up"}}}},
            "/readyz": {
                "get": {
                    "summary": "Database and broker reachable",
                    "security": [],
                    "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
                }
            },
            "/v1/jobs": {
                "post": {
                    "summary": "Submit a job (scope jobs:write)",
                    "parameters": [idempotency_key],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"oneOf": variants, "discriminator": {"propertyName": "type"}}
                            }
                        },
                    },
                    "responses": {"202": _json(job, "Accepted (or replayed for the same Idempotency-Key)"), **errors},
                },
                "get": {
                    "summary": "List jobs, newest first (scope jobs:read)",
                    "parameters": [
                        {"name": n, "in": "query", "schema": s}
                        for n, s in (
                            ("status", {"type": "string"}),
                            ("type", {"type": "string"}),
                            ("created_after", {"type": "string", "format": "date-time"}),
                            ("created_before", {"type": "string", "format": "date-time"}),
                            ("error_code", {"type": "string"}),
                            ("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
                            ("cursor", {"type": "string"}),
                        )
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "jobs": {"type": "array", "items": job},
                                    "next_cursor": {"type": ["string", "null"]},
                                },
                            },
                            "A page of jobs",
                        ),
                        **errors,
                    },
                },
            },
            "/v1/jobs/{job_id}": {
                "get": {
                    "summary": "A job (scope jobs:read)",
                    "parameters": [job_id],
                    "responses": {"200": _json(job, "The job"), **errors},
                }
            },
            "/v1/jobs/{job_id}/cancel": {
                "post": {
                    "summary": "Cancel a job (scope jobs:write)",
                    "parameters": [job_id],
                    "responses": {"202": _json(job, "Cancelled or asked to stop"), **errors},
                }
            },
            "/v1/tracks": {
                "post": {
                    "summary": "Upload a track; 202 with its track.ingest job (scope tracks:write)",
                    "parameters": [idempotency_key],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["audio", "metadata"],
                                    "properties": {
                                        "audio": {
                                            "type": "string",
                                            "format": "binary",
                                            "description": "MP3, FLAC, WAV, Ogg, M4A, AAC or AIFF (sniffed)",
                                        },
                                        "cover": {
                                            "type": "string",
                                            "format": "binary",
                                            "description": "JPEG, PNG, WebP or GIF (sniffed)",
                                        },
                                        "metadata": _schema(TrackFields, components),
                                    },
                                },
                                "encoding": {"metadata": {"contentType": "application/json"}},
                            }
                        },
                    },
                    "responses": {
                        "202": _json(job, "Accepted (or replayed for the same Idempotency-Key); has track_id"),
                        **errors,
                        "415": _error(),
                        "503": _error(),
                    },
                }
            },
            "/v1/admin/jobs/{job_id}/retry": {
                "post": {
                    "summary": "Re-run a finished job (scope admin)",
                    "parameters": [job_id],
                    "requestBody": {"content": {"application/json": {"schema": _schema(RetryOne, components)}}},
                    "responses": {"202": _json(job, "Re-queued"), **errors},
                }
            },
            "/v1/admin/jobs/retry": {
                "post": {
                    "summary": "Re-run finished jobs by filter (scope admin)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _retry_many(components)}},
                    },
                    "responses": {"202": _json({"type": "object"}, "Re-queued jobs"), **errors},
                }
            },
            "/v1/admin/payout-holds": {
                "get": {
                    "summary": "Balances owed but held because the owner's wallet cannot receive (scope admin)",
                    "responses": {"200": _json({"type": "object"}, "holds: account, owed, wallet, reason"), **errors},
                }
            },
            **_ledger_paths(components, errors),
        },
    }


def _retry_many(components: dict[str, Any]) -> dict[str, Any]:
    """RetryMany, and its rule: at least one narrowing filter, or ``all: true``."""
    ref = _schema(RetryMany, components)
    narrowing = [
        {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
        for name in ("type", "error_code", "created_after", "created_before")
    ]
    return {"allOf": [ref, {"anyOf": [*narrowing, {"required": ["all"], "properties": {"all": {"const": True}}}]}]}


def _ledger_paths(components: dict[str, Any], errors: dict[str, Any]) -> dict[str, Any]:
    """Plays, sales, ledger accounts and payouts (issue 5). Amounts are strings of integer base units."""
    from api.ledger import EntriesQuery, PayoutQuery, SaleRequest
    from roadie.ledger.plays import PlayEvent

    event = _schema(PlayEvent, components)
    counts = {
        "type": "object",
        "properties": {
            "accepted": {"type": "integer"},
            "duplicate": {"type": "integer"},
            "rejected": {"type": "integer"},
            "errors": {"type": "array", "items": {"type": "object"}, "description": "index, field, reason"},
        },
    }
    obj = {"type": "object"}
    query = PayoutQuery.model_json_schema()["properties"]
    entries = EntriesQuery.model_json_schema()["properties"]
    return {
        "/v1/plays": {
            "post": {
                "summary": "Store up to 1,000 listening events (PlayEvent each), once per event_id (scope plays:write)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _play_batch(components, event)}},
                },
                "responses": {"200": _json(counts, "Counts and the refused events"), **errors},
            }
        },
        "/v1/sales": {
            "post": {
                "summary": "Record an NFT sale and split its royalty among the creators (scope sales:write)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _schema(SaleRequest, components)}},
                },
                "responses": {
                    "201": _json(obj, "Recorded"),
                    "200": _json(obj, "Already recorded (same signature)"),
                    **errors,
                },
            }
        },
        "/v1/ledger/accounts/{account_id}": {
            "get": {
                "summary": "An account's balance and entries, newest first (scope ledger:read)",
                "parameters": [
                    {
                        "name": "account_id",
                        "in": "path",
                        "required": True,
                        "schema": {
                            "anyOf": [
                                {"type": "string", "enum": ["treasury", "clearing", "external"]},
                                {"type": "integer", "minimum": 1, "maximum": BIGINT_MAX},
                            ]
                        },
                        "description": "Numeric id, or treasury, clearing, external",
                    },
                    *({"name": name, "in": "query", "schema": schema} for name, schema in entries.items()),
                ],
                "responses": {"200": _json(obj, "The account"), **errors},
            }
        },
        "/v1/payouts": {
            "get": {
                "summary": "Payouts by period, account and status, oldest first (scope ledger:read)",
                "parameters": [{"name": name, "in": "query", "schema": schema} for name, schema in query.items()],
                "responses": {"200": _json(obj, "A page of payouts and next_after_id"), **errors},
            }
        },
    }


def _play_batch(components: dict[str, Any], event: dict[str, str]) -> dict[str, str]:
    """PlayBatch, whose events the API validates one by one (so one bad event does not sink the rest)."""
    from roadie.ledger.plays import PlayBatch

    ref = _schema(PlayBatch, components)
    components["PlayBatch"]["properties"]["events"]["items"] = event
    return ref
