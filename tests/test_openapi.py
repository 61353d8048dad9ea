"""The OpenAPI document is the models' schemas, the API's answers fit it, and ``/docs`` reads it from local files."""

from __future__ import annotations

import re
from typing import Any

import httpx
import jsonschema
import pytest
from pydantic import BaseModel, TypeAdapter

from api.openapi import REF_TEMPLATE, schema_sources
from tests.helpers import submit, wait_for_job


@pytest.fixture(scope="module")
def spec(api_url: str) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(f"{api_url}/openapi.json", timeout=120).raise_for_status().json()
    return document


def test_every_schema_in_the_document_is_a_models_own(spec: dict[str, Any]) -> None:
    components = spec["components"]["schemas"]
    expected: dict[str, Any] = {}
    for source, mode in schema_sources():
        adapter = source if isinstance(source, TypeAdapter) else TypeAdapter(source)
        schema = adapter.json_schema(mode=mode, ref_template=REF_TEMPLATE)
        expected.update(schema.pop("$defs", {}))
        if isinstance(source, type) and issubclass(source, BaseModel):
            expected[source.__name__] = schema

    assert components.keys() == expected.keys()  # a name two models share would be renamed here: rename one
    for name, schema in expected.items():
        assert components[name] == schema, name


def test_every_answer_and_body_in_the_document_names_a_model(spec: dict[str, Any]) -> None:
    schemas = []
    for operations in spec["paths"].values():
        for operation in operations.values():
            for response in operation["responses"].values():
                schemas += [content["schema"] for content in response.get("content", {}).values()]
            schemas += [content["schema"] for content in operation.get("requestBody", {}).get("content", {}).values()]

    refs = [schema.get("$ref") or schema["oneOf"][0]["$ref"] for schema in schemas]  # oneOf: one job type each
    assert all(ref.startswith("#/components/schemas/") for ref in refs)


def fits(spec: dict[str, Any], model: str, instance: Any) -> None:
    """Validate against a component of the document, its references resolved within it."""
    schema = {"$ref": REF_TEMPLATE.format(model=model), "components": spec["components"]}
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(instance)


@pytest.mark.usefixtures("worker")
def test_a_job_with_its_attempts_and_reruns_fits_the_document(
    spec: dict[str, Any], client: httpx.Client, admin: httpx.Client
) -> None:
    job = wait_for_job(client, submit(client, {"fail": "permanent", "fail_times": 1})["id"], "failed")
    fits(spec, "JobView", job)
    assert admin.post(f"/v1/admin/jobs/{job['id']}/retry").status_code == 202

    job = wait_for_job(admin, job["id"], "succeeded")

    assert job["reruns"]
    assert len(job["attempt_history"]) == 2
    fits(spec, "JobView", job)
    fits(spec, "JobPage", client.get("/v1/jobs").json())
    fits(spec, "Error", client.get("/v1/jobs?limit=0").json())


def test_docs_is_swagger_ui_from_this_server_without_a_key(api_url: str) -> None:
    page = httpx.get(f"{api_url}/docs")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "://" not in page.text  # no CDN, no other host
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    spec_url = re.search(r'url: "([^"]+)"', page.text)
    assert spec_url is not None
    assert {"swagger-ui.css", "swagger-ui-bundle.js"} <= {asset.rsplit("/", 1)[-1] for asset in assets}
    for asset in [*assets, spec_url.group(1)]:
        assert re.match(r"/[^/]", asset), asset  # a path on this server
        assert httpx.get(f"{api_url}{asset}").status_code == 200, asset
