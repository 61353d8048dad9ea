"""``/v1/webhooks``: a client's webhook endpoints, their secrets and their deliveries.

Every route is a thin layer over :mod:`roadie.webhooks.endpoints`. Writes need ``webhooks:write``;
reads ``webhooks:read`` or ``webhooks:write``. The key is checked before a byte of the body is read.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.errors import json_response
from api.http import base_url, parse, parse_body, path_uuid, read_json, require
from api.jobs import query_dict
from api.params import TextFilter, Timestamp
from roadie.db import async_transaction
from roadie.webhooks import endpoints
from roadie.webhooks.urls import MAX_URL_LENGTH
from roadie.webhooks.views import (
    CreatedEndpoint,
    DeliveryPage,
    DeliveryStatus,
    EndpointList,
    EventType,
    Resent,
    RotatedSecret,
    endpoint_view,
)

WRITE, READ = "webhooks:write", "webhooks:read"

Url = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        pattern=r"^https?://\S+$",
        description="https, or plain http to a host in ROADIE_WEBHOOK_ALLOWED_HOSTS; no credentials in it.",
    ),
]
Events = Annotated[list[EventType], Field(min_length=1, description="The event types posted to it.")]
Description = Annotated[str, Field(max_length=500)]


class EndpointRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url
    events: Events
    description: Description | None = None


class EndpointChange(BaseModel):
    """The fields to change; one left out (or null) stays as it is, but a null description clears it."""

    model_config = ConfigDict(extra="forbid")

    url: Url | None = None
    events: Events | None = None
    enabled: bool | None = Field(default=None, description="false disables it; true enables it and forgets failures.")
    description: Description | None = None


class DeliveryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: list[DeliveryStatus] = Field(default_factory=list)
    limit: int = Field(default=50, ge=1, le=200)
    cursor: TextFilter | None = None


class ResendFailed(BaseModel):
    """Every failed delivery of the endpoint made in [since, until)."""

    model_config = ConfigDict(extra="forbid")

    since: Timestamp
    until: Timestamp


def _endpoint_id(request: Request) -> uuid.UUID:
    return path_uuid(request, "endpoint_id")


async def create_endpoint(request: Request) -> Response:
    client = await require(None, request, WRITE)  # before reading a byte of the body
    body = parse_body(EndpointRequest, await read_json(request))
    async with async_transaction() as session:
        endpoint, secret = await endpoints.create(session, client, body.url, body.events, body.description)
    created = CreatedEndpoint(**endpoint_view(endpoint).model_dump(), secret=secret)
    return json_response(created, 201, {"Location": f"{base_url(request)}/v1/webhooks/{endpoint.id}"})


async def list_endpoints(request: Request) -> Response:
    async with async_transaction() as session:
        client = await require(session, request, READ, WRITE)
        found = await endpoints.list_endpoints(session, client)
        return json_response(EndpointList(endpoints=[endpoint_view(endpoint) for endpoint in found]))


async def get_endpoint(request: Request) -> Response:
    endpoint_id = _endpoint_id(request)
    async with async_transaction() as session:
        client = await require(session, request, READ, WRITE)
        return json_response(endpoint_view(await endpoints.find(session, endpoint_id, client)))


async def update_endpoint(request: Request) -> Response:
    endpoint_id = _endpoint_id(request)
    client = await require(None, request, WRITE)  # before reading a byte of the body
    body = parse_body(EndpointChange, await read_json(request, empty={}))
    cleared = "description" in body.model_fields_set and body.description is None
    changes = endpoints.Changes(
        url=body.url, events=body.events, enabled=body.enabled, description="" if cleared else body.description
    )
    async with async_transaction() as session:
        endpoint = await endpoints.find(session, endpoint_id, client, lock=True)
        endpoint = await endpoints.update(session, endpoint, changes, actor=client.name)
        return json_response(endpoint_view(endpoint))


async def delete_endpoint(request: Request) -> Response:
    endpoint_id = _endpoint_id(request)
    async with async_transaction() as session:
        client = await require(session, request, WRITE)
        endpoint = await endpoints.find(session, endpoint_id, client, lock=True)
        await endpoints.delete(session, endpoint, actor=client.name)
    return Response(status_code=204)


async def rotate_secret(request: Request) -> Response:
    endpoint_id = _endpoint_id(request)
    async with async_transaction() as session:
        client = await require(session, request, WRITE)
        endpoint = await endpoints.find(session, endpoint_id, client, lock=True)
        endpoint, secret = await endpoints.rotate_secret(session, endpoint, actor=client.name)
        expires = endpoint.previous_secret_expires_at
    return json_response(RotatedSecret(id=endpoint_id, secret=secret, previous_secret_expires_at=expires))


async def list_deliveries(request: Request) -> Response:
    endpoint_id = _endpoint_id(request)
    async with async_transaction() as session:
        client = await require(session, request, READ, WRITE)
        query = parse(DeliveryQuery, query_dict(request, {"status"}))
        endpoint = await endpoints.find(session, endpoint_id, client)
        found, next_cursor = await endpoints.deliveries(
            session, endpoint, statuses=query.status, limit=query.limit, cursor=query.cursor
        )
        return json_response(DeliveryPage(deliveries=found, next_cursor=next_cursor))


async def resend_delivery(request: Request) -> Response:
    endpoint_id = _endpoint_id(request)
    delivery_id = path_uuid(request, "delivery_id")
    async with async_transaction() as session:
        client = await require(session, request, WRITE)
        delivery = await endpoints.find_delivery(session, delivery_id, client, endpoint_id)
        await endpoints.resend(session, delivery, actor=client.name)
    return json_response(Resent(count=1, delivery_ids=[delivery_id]), 202)


async def resend_failed(request: Request) -> Response:
    endpoint_id = _endpoint_id(request)
    client = await require(None, request, WRITE)  # before reading a byte of the body
    window = parse_body(ResendFailed, await read_json(request))
    async with async_transaction() as session:
        endpoint = await endpoints.find(session, endpoint_id, client, lock=True)
        resent = await endpoints.resend_failed(session, endpoint, window.since, window.until, actor=client.name)
    return json_response(Resent(count=len(resent), delivery_ids=resent), 202)


routes = [
    Route("/v1/webhooks", create_endpoint, methods=["POST"]),
    Route("/v1/webhooks", list_endpoints, methods=["GET"]),
    Route("/v1/webhooks/{endpoint_id}", get_endpoint, methods=["GET"]),
    Route("/v1/webhooks/{endpoint_id}", update_endpoint, methods=["PATCH"]),
    Route("/v1/webhooks/{endpoint_id}", delete_endpoint, methods=["DELETE"]),
    Route("/v1/webhooks/{endpoint_id}/rotate-secret", rotate_secret, methods=["POST"]),
    Route("/v1/webhooks/{endpoint_id}/deliveries", list_deliveries, methods=["GET"]),
    Route("/v1/webhooks/{endpoint_id}/deliveries/{delivery_id}/resend", resend_delivery, methods=["POST"]),
    Route("/v1/webhooks/{endpoint_id}/resend-failed", resend_failed, methods=["POST"]),
]
