"""The generated API and event documents: valid to real validators, complete, and from the code.

- OpenAPI 3.1 (``api/openapi.py``): ``openapi-spec-validator``; every route of the app is a path;
  parameter bounds are those the handlers read through (``readside.api.params``).
- AsyncAPI 3.0 (``schemas/asyncapi.py``): the official AsyncAPI 3.0.0 JSON Schema
  (``tests/data``); every topic, its ``.dlq`` and every event type appear.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator, validators
from openapi_spec_validator import validate

from readside.api import providers, requests, threads
from readside.api.openapi import openapi_document, openapi_path
from readside.cli import main as cli
from readside.schemas import PAYLOAD_TYPES, TOPICS
from readside.schemas.asyncapi import DLQ_HEADERS, asyncapi_document
from readside.serve import create_app
from readside.shared.settings import Settings

SETTINGS = replace(Settings(), jwt_secret="s" * 40, cursor_secret="c" * 40)


def app_routes(settings: Settings = SETTINGS) -> list:
    return create_app(settings).routes


def test_openapi_is_valid_3_1() -> None:
    doc = openapi_document(app_routes())
    assert doc["openapi"] == "3.1.0"
    validate(doc)
    validate(openapi_document(app_routes(replace(SETTINGS, metrics_port=9999))))


def test_every_route_is_a_path_with_its_statuses() -> None:
    routes = app_routes()
    doc = openapi_document(routes)
    assert {openapi_path(r.path) for r in routes} == set(doc["paths"])
    assert openapi_path("/v1/img/avatar/{avatar_id:path}") == "/v1/img/avatar/{avatar_id}"
    assert "/openapi.json" in doc["paths"] and "/metrics" in doc["paths"]
    assert "/metrics" not in openapi_document(app_routes(replace(SETTINGS, metrics_port=9999)))["paths"]
    for path, item in doc["paths"].items():
        responses = item["get"]["responses"]
        assert "200" in responses and "500" in responses, path
        for status, response in responses.items():
            if status not in ("200", "304"):
                assert response["content"] == {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def test_a_route_without_an_operation_is_an_error_not_a_gap() -> None:
    from starlette.routing import Route

    async def undocumented(request):
        return None

    with pytest.raises(ValueError, match="/v1/new has no Operation"):
        openapi_document([*app_routes(), Route("/v1/new", undocumented)])


def test_security_marks_public_endpoints() -> None:
    paths = openapi_document(app_routes())["paths"]
    public = {p for p, item in paths.items() if item["get"].get("security") == []}
    assert public == {"/healthz", "/readyz", "/metrics", "/v1/providers", "/openapi.json", "/v1/img/avatar/{avatar_id}"}
    assert "401" in paths["/v1/threads/preview"]["get"]["responses"]
    assert "401" not in paths["/v1/providers"]["get"]["responses"]
    assert "403" in paths["/v1/requests/technician-views"]["get"]["responses"]
    assert "403" in paths["/v1/admin/projections"]["get"]["responses"]
    assert "404" in paths["/v1/threads/{thread_id}/messages"]["get"]["responses"]


def test_parameters_come_from_the_handlers_declarations() -> None:
    paths = openapi_document(app_routes())["paths"]

    def param(path: str, name: str) -> dict:
        return next(p for p in paths[path]["get"]["parameters"] if p["name"] == name)

    assert param("/v1/threads/preview", "limit")["schema"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}
    assert param("/v1/threads/{thread_id}/messages", "thread_id")["in"] == "path"
    assert param("/v1/providers", "sort")["schema"]["enum"] == list(providers.SORTS)
    assert param("/v1/providers", "limit")["schema"]["maximum"] == 50
    view = param("/v1/requests/technician-views", "view")["schema"]
    assert view == requests.VIEW.schema() and view["default"] == "unassigned"
    assert param("/v1/threads/summary", "role")["schema"]["enum"] == list(threads.ROLES)
    assert param("/v1/threads/preview", "X-Readside-After")["in"] == "header"
    assert param("/v1/threads/preview", "If-None-Match")["in"] == "header"
    headers = paths["/v1/threads/preview"]["get"]["responses"]["200"]["headers"]
    assert {"ETag", "X-Readside-Lag", "X-Readside-Consistency", "X-Readside-Dead-Letters"} <= set(headers)


def test_response_schemas_are_valid_json_schema() -> None:
    doc = openapi_document(app_routes())
    for _path, item in doc["paths"].items():
        for response in item["get"]["responses"].values():
            for media in response.get("content", {}).values():
                if "$ref" not in media["schema"]:
                    Draft202012Validator.check_schema(media["schema"])


def test_readside_openapi_and_asyncapi_write_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("READSIDE_TOPIC_PREFIX", "acme.")
    assert cli(["openapi", "--out", str(tmp_path / "openapi.json")]) == 0
    validate(orjson.loads((tmp_path / "openapi.json").read_bytes()))
    assert cli(["asyncapi", "--out", str(tmp_path / "asyncapi.json")]) == 0
    doc = orjson.loads((tmp_path / "asyncapi.json").read_bytes())
    assert doc["channels"]["threads_events"]["address"] == "acme.threads.events"


# -- AsyncAPI --------------------------------------------------------------------------------

def _asyncapi_validator():
    schema = json.loads(gzip.decompress((Path(__file__).parents[1] / "data" / "asyncapi-3.0.0.schema.json.gz").read_bytes()))
    return validators.validator_for(schema)(schema)


def test_asyncapi_is_valid_3_0() -> None:
    validator = _asyncapi_validator()
    doc = orjson.loads(orjson.dumps(asyncapi_document(prefix="p.")))
    assert doc["asyncapi"] == "3.0.0"
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(doc)]
    assert not errors, errors[:5]
    assert not validator.is_valid({**doc, "channels": {"x": {"address": 5}}})  # the validator does bite


def test_asyncapi_has_every_topic_dlq_and_event_type() -> None:
    doc = asyncapi_document(prefix="p.")
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {"p." + t for t in TOPICS} | {"p." + t + ".dlq" for t in TOPICS}
    assert set(PAYLOAD_TYPES) <= set(doc["components"]["messages"])
    for topic, (key, carried) in TOPICS.items():
        channel = doc["channels"][topic.replace(".", "_")]
        assert set(channel["messages"]) == set(carried)
        for event_type in carried:
            message = doc["components"]["messages"][event_type]
            assert key in message["bindings"]["kafka"]["key"]["description"]
            assert message["payload"]["properties"]["type"] == {"const": event_type}
    dlq = doc["components"]["messages"]["dead_letter"]
    assert set(dlq["headers"]["properties"]) == set(DLQ_HEADERS)
    # every $ref resolves inside the document
    text = orjson.dumps(doc).decode()
    for ref in set(re.findall(r'"\$ref":"#/([^"]+)"', text)):
        node = doc
        for part in ref.split("/"):
            node = node[part]
