"""The served OpenAPI document against the real API: every route is in it, every status a request
can produce is documented for its route, and real 200 bodies validate against the documented
schema (``jsonschema``). Table-driven: one row per (route, request) with the status it must get."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from readside.api.auth import make_token
from readside.load import mixed_stream
from tests.support import auth, send, wait_caught_up

PROJECTIONS = {"threads": ["threads.events", "payments.events"], "requests": ["requests.events"],
               "providers": ["providers.events"], "workflows": ["workflows.events"]}
STREAM = mixed_stream(1, seed=71)
STARTED = next(r for r in STREAM if r.value["type"] == "thread.started")
THREAD, CLIENT = STARTED.key, STARTED.value["payload"]["client"]["id"]
# a user whose avatar is a data: URL (the load streams keep one avatar per user): served as an image
PICTURED = next(p["id"] for r in STREAM if r.value["type"] == "thread.started"
                for p in (r.value["payload"]["client"], r.value["payload"]["provider"])
                if (p["avatar_url"] or "").startswith("data:"))

# (path template, concrete path, who, params, status); who: None, "user", "technician", "admin"
CASES: list[tuple[str, str, str | None, dict[str, str], int]] = [
    ("/healthz", "/healthz", None, {}, 200),
    ("/readyz", "/readyz", None, {}, 200),
    ("/metrics", "/metrics", None, {}, 200),
    ("/openapi.json", "/openapi.json", None, {}, 200),
    ("/v1/admin/projections", "/v1/admin/projections", "admin", {}, 200),
    ("/v1/admin/projections", "/v1/admin/projections", "user", {}, 403),
    ("/v1/admin/projections", "/v1/admin/projections", None, {}, 401),
    ("/v1/admin/projections", "/v1/admin/projections", "admin", {"x": "1"}, 400),
    ("/v1/events", "/v1/events", "user", {}, 503),  # this stack has no Redis
    ("/v1/events", "/v1/events", None, {}, 401),
    ("/v1/events", "/v1/events", "user", {"x": "1"}, 400),
    ("/v1/threads/preview", "/v1/threads/preview", "user", {"limit": "2"}, 200),
    ("/v1/threads/preview", "/v1/threads/preview", "user", {"limit": "101"}, 400),
    ("/v1/threads/preview", "/v1/threads/preview", None, {}, 401),
    ("/v1/threads/summary", "/v1/threads/summary", "user", {"role": "client"}, 200),
    ("/v1/threads/summary", "/v1/threads/summary", "user", {"role": "admin"}, 400),
    ("/v1/threads/summary", "/v1/threads/summary", None, {}, 401),
    ("/v1/threads/{thread_id}/messages", f"/v1/threads/{THREAD}/messages", "user", {"limit": "3"}, 200),
    ("/v1/threads/{thread_id}/messages", "/v1/threads/t-nope/messages", "user", {}, 404),
    ("/v1/threads/{thread_id}/messages", f"/v1/threads/{THREAD}/messages", "user", {"cursor": "garbage"}, 400),
    ("/v1/threads/{thread_id}/messages", f"/v1/threads/{THREAD}/messages", None, {}, 401),
    ("/v1/threads/{thread_id}/payments", f"/v1/threads/{THREAD}/payments", "user", {}, 200),
    ("/v1/threads/{thread_id}/payments", "/v1/threads/t-nope/payments", "user", {}, 404),
    ("/v1/threads/{thread_id}/payments", f"/v1/threads/{THREAD}/payments", "user", {"limit": "3"}, 400),
    ("/v1/threads/{thread_id}/payments", f"/v1/threads/{THREAD}/payments", None, {}, 401),
    ("/v1/providers", "/v1/providers", None, {"limit": "3", "sort": "top_rated"}, 200),
    ("/v1/providers", "/v1/providers", None, {"fields": "id,rating_avg,created_at"}, 200),
    ("/v1/providers", "/v1/providers", None, {"sort": "cheapest"}, 400),
    ("/v1/workflows", "/v1/workflows", "user", {}, 200),
    ("/v1/workflows", "/v1/workflows", "user", {"limit": "0"}, 400),
    ("/v1/workflows", "/v1/workflows", None, {}, 401),
    ("/v1/templates", "/v1/templates", "user", {"limit": "5"}, 200),
    ("/v1/templates", "/v1/templates", None, {}, 401),
    ("/v1/templates", "/v1/templates", "user", {"limit": "x"}, 400),
    ("/v1/requests/technician-views", "/v1/requests/technician-views", "technician",
     {"view": "all_unsolved", "per_page": "5"}, 200),
    ("/v1/requests/technician-views", "/v1/requests/technician-views", "technician", {"view": "mine"}, 400),
    ("/v1/requests/technician-views", "/v1/requests/technician-views", "user", {}, 403),
    ("/v1/requests/technician-views", "/v1/requests/technician-views", None, {}, 401),
    ("/v1/requests/technician-views/counts", "/v1/requests/technician-views/counts", "technician",
     {"business_unit_id": "1"}, 200),
    ("/v1/requests/technician-views/counts", "/v1/requests/technician-views/counts", "technician",
     {"business_unit_id": "1.5"}, 400),
    ("/v1/requests/technician-views/counts", "/v1/requests/technician-views/counts", "user", {}, 403),
    ("/v1/requests/technician-views/counts", "/v1/requests/technician-views/counts", None, {}, 401),
    ("/v1/img/avatar/{avatar_id}", f"/v1/img/avatar/{PICTURED}", None, {}, 200),
    ("/v1/img/avatar/{avatar_id}", "/v1/img/avatar/u-nobody", None, {}, 404),
    ("/v1/img/avatar/{avatar_id}", f"/v1/img/avatar/{PICTURED}", None, {"v": "2"}, 400),
]
CONDITIONAL = sorted({(t, p, w) for t, p, w, q, s in CASES if s == 200 and t not in
                      ("/healthz", "/readyz", "/metrics", "/v1/admin/projections")})


@pytest.fixture(scope="module")
def loaded(stack):
    s = stack.settings
    send(s, STREAM)
    for name, topics in PROJECTIONS.items():
        wait_caught_up(s.database_url, s.kafka_bootstrap, name, [s.topic_prefix + t for t in topics])
    return stack


@pytest.fixture(scope="module")
def document(loaded) -> dict[str, Any]:
    response = httpx.get(loaded.base_url + "/openapi.json", timeout=10)
    assert response.status_code == 200
    doc = response.json()
    validate(doc)
    return doc


def _headers(stack, who: str | None) -> dict[str, str]:
    if who is None:
        return {}
    sub, roles = {"user": (CLIENT, []), "technician": ("tech-1", ["technician"]), "admin": ("ops-1", ["admin"])}[who]
    return auth(stack, sub, roles)


def test_every_served_route_has_cases(document: dict[str, Any]) -> None:
    assert {c[0] for c in CASES} == set(document["paths"])
    # a 200 for each but the event stream (it needs Redis, which this stack has not: tests/e2e/test_events.py)
    assert {p for p in document["paths"] if not any(c[0] == p and c[4] == 200 for c in CASES)} == {"/v1/events"}


@pytest.mark.parametrize(("template", "path", "who", "params", "status"), CASES,
                         ids=[f"{c[4]}-{c[1]}-{c[2]}" for c in CASES])
def test_status_is_documented_and_200_bodies_match(loaded, document: dict[str, Any], template: str, path: str,
                                                   who: str | None, params: dict[str, str], status: int) -> None:
    response = httpx.get(loaded.base_url + path, params=params, headers=_headers(loaded, who), timeout=10)
    assert response.status_code == status, response.text[:300]
    documented = document["paths"][template]["get"]["responses"]
    assert str(status) in documented, f"{template} answers {status}, which its document does not list"
    media = response.headers["content-type"].split(";")[0]
    content = documented[str(status)]["content"]
    assert media in content or media.split("/")[0] + "/*" in content, (media, list(content))  # image/* ranges
    if media in ("application/json", "application/problem+json"):
        schema = content[media]["schema"]
        if "$ref" in schema:
            schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in
                  Draft202012Validator(schema).iter_errors(response.json())]
        assert not errors, errors[:5]
    if status == 200 and template != "/metrics":
        for header in documented["200"]["headers"]:
            if header not in ("X-Readside-Consistency", "X-Readside-Dead-Letters", "X-Cache"):
                assert header in response.headers, header


@pytest.mark.parametrize(("template", "path", "who"), CONDITIONAL, ids=[c[1] for c in CONDITIONAL])
def test_304_is_documented(loaded, document: dict[str, Any], template: str, path: str, who: str | None) -> None:
    headers = _headers(loaded, who)
    first = httpx.get(loaded.base_url + path, headers=headers, timeout=10)
    again = httpx.get(loaded.base_url + path, headers={**headers, "If-None-Match": first.headers["ETag"]}, timeout=10)
    assert again.status_code == 304
    assert "304" in document["paths"][template]["get"]["responses"]


def test_read_your_writes_headers_are_documented(loaded, document: dict[str, Any]) -> None:
    topic = loaded.settings.topic_prefix + "threads.events"
    response = httpx.get(loaded.base_url + "/v1/threads/summary", timeout=10,
                         headers={**_headers(loaded, "user"), "X-Readside-After": f"{topic}:0:0"})
    assert response.status_code == 200 and response.headers["X-Readside-Consistency"] in ("caught-up", "dead-lettered")
    declared = document["paths"]["/v1/threads/summary"]["get"]
    assert "X-Readside-Consistency" in declared["responses"]["200"]["headers"]
    assert any(p["name"] == "X-Readside-After" and p["in"] == "header" for p in declared["parameters"])


def _probes(schema: dict[str, Any]) -> list[tuple[str, bool]]:
    """(value, accepted) pairs at and past a documented parameter's bounds."""
    if schema.get("type") == "integer":
        low, high = schema["minimum"], schema["maximum"]
        return [(str(low), True), (str(high), True), (str(low - 1), False), (str(high + 1), False)]
    if "enum" in schema:
        return [(v, True) for v in schema["enum"]] + [("no-such-value", False)]
    return []


def test_documented_parameter_ranges_and_enums_are_what_the_api_enforces(loaded, document: dict[str, Any]) -> None:
    token = make_token(loaded.settings.jwt_secret, CLIENT, ["technician", "admin"])
    checked = 0
    with httpx.Client(base_url=loaded.base_url, timeout=10, headers={"Authorization": f"Bearer {token}"}) as client:
        for template, item in document["paths"].items():
            path = template.replace("{thread_id}", THREAD).replace("{avatar_id}", PICTURED)
            for param in item["get"]["parameters"]:
                if param["in"] != "query":
                    continue
                for value, accepted in _probes(param["schema"]):
                    status = client.get(path, params={param["name"]: value}).status_code
                    assert (status != 400) is accepted, (template, param["name"], value, status)
                    checked += 1
            if template not in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
                assert client.get(path, params={"undocumented": "1"}).status_code == 400, template
    assert checked >= 60
