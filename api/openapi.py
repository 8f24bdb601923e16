"""The OpenAPI 3.1 document of the query API, generated from the code (``GET /openapi.json``,
``readside openapi``).

Each endpoint declares, next to its handler, an :class:`Operation` (``@documented(...)``): its
parameters are the very :class:`readside.api.params.Param` objects the handler reads through (names,
types, ranges, defaults, enums cannot drift), its identity rule, its 200 body as a JSON Schema,
and whether it is a list served by ``readside.api.serving`` (ETag, 304, freshness and read-your-writes
headers). The statuses follow from that: every endpoint may answer a 500 problem; a parsed query
string, 400; a token, 401 (and 400 for two ``Authorization`` headers); a role, 403; a list, 304,
400 (``X-Readside-After``) and 503 (database); ``errors`` adds the rest (404, 503). The paths come
from the app's routes, so a route without an ``Operation`` is an error, never a silent gap.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_args

from starlette.requests import Request
from starlette.responses import Response

from readside.api.params import Param
from readside.shared.jsonbytes import dumps

__all__ = ["PROBLEM", "Operation", "documented", "openapi_document", "openapi_path", "serve_openapi"]

# -- small schema builders -------------------------------------------------------------------

STRING: dict[str, Any] = {"type": "string"}
INTEGER: dict[str, Any] = {"type": "integer"}
NUMBER: dict[str, Any] = {"type": "number"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
CURSOR: dict[str, Any] = {"type": ["string", "null"], "description": "pass as `cursor` for the next page; null on the last"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(props: dict[str, Any], *, optional: tuple[str, ...] = (), open_: bool = True) -> dict[str, Any]:
    """An object with ``props`` (all required but ``optional``)."""
    out: dict[str, Any] = {"type": "object", "properties": props,
                           "required": [k for k in props if k not in optional]}
    if not open_:
        out["additionalProperties"] = False
    return out


def enum(literal: Any) -> dict[str, Any]:
    """A string enum from a ``Literal`` type (the event models' value sets: one source)."""
    return {"type": "string", "enum": list(get_args(literal))}


def array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def counts(names: tuple[str, ...]) -> dict[str, Any]:
    return obj({n: INTEGER for n in names}, open_=False)


PROBLEM: dict[str, Any] = obj({
    "type": {"type": "string", "description": "stable per kind, e.g. `/problems/invalid-parameter`"},
    "title": STRING,
    "status": INTEGER,
    "detail": {"type": "string", "description": "for developers"},
})

_REASONS = {
    200: "OK", 304: "Not modified: the `If-None-Match` tag is current (no body)",
    400: "Invalid parameter, cursor, `X-Readside-After`, or two `Authorization` headers",
    401: "No valid token", 403: "The token lacks the role", 404: "Not found",
    500: "Internal error (logged)", 503: "Unavailable",
}


@dataclass(frozen=True)
class Operation:
    summary: str
    description: str = ""
    params: tuple[Param, ...] = ()
    auth: str | None = "token"  # None: public; "token": any valid token; else a role's name
    body: dict[str, Any] | None = None  # the 200 body's JSON Schema
    media: str = "application/json"
    listing: bool = False  # served by readside.api.serving: ETag/304, X-Readside-* headers
    query: bool = True  # the query string is checked (unknown parameters: 400)
    cache_control: str = "private, no-cache"
    errors: dict[int, str] = field(default_factory=dict)  # further statuses -> when
    path_params: dict[str, str] = field(default_factory=dict)  # name -> description
    etag: bool = False  # not a list, but answers ETag/304 itself

    def statuses(self) -> list[int]:
        out = {200, 500, *self.errors}
        if self.query or self.auth:
            out.add(400)
        if self.auth:
            out.add(401)
        if self.auth not in (None, "token"):
            out.add(403)
        if self.listing:
            out |= {304, 400, 503}
        if self.etag:
            out.add(304)
        return sorted(out)


def documented(operation: Operation) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def mark(handler: Callable[..., Any]) -> Callable[..., Any]:
        handler.operation = operation  # type: ignore[attr-defined]
        return handler

    return mark


# -- the document ----------------------------------------------------------------------------

def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or STRING}


_HEADERS = {
    "ETag": _header("weak tag of this answer; send it back as `If-None-Match`"),
    "Cache-Control": _header("`private, no-cache` (per viewer), `public, max-age=30` (public lists and avatar images), "
                             "`no-store`"),
    "Server-Timing": _header("`cache;dur=…, db;dur=…, app;dur=…, total;dur=…` (milliseconds)"),
    "X-Cache": _header("`HIT` or `MISS` (with Redis)", {"type": "string", "enum": ["HIT", "MISS"]}),
    "X-Readside-Lag": _header("`events=<n>; seconds=<s>`: how far the projection is behind the broker"),
    "X-Readside-Consistency": _header(
        "with `X-Readside-After`: `caught-up`, `timeout`, or `dead-lettered`",
        {"type": "string", "enum": ["caught-up", "timeout", "dead-lettered"]}),
    "X-Readside-Dead-Letters": _header("with `dead-lettered`: the awaited positions dead-lettered, "
                                       "`<topic>:<partition>:<offset>[,...]`"),
}


def openapi_path(route_path: str) -> str:
    """A Starlette path as an OpenAPI path template: ``{name:converter}`` becomes ``{name}``."""
    return re.sub(r"{(\w+):\w+}", r"{\1}", route_path)


def _parameters(path: str, op: Operation, prefix: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in re.findall(r"{(\w+)}", openapi_path(path)):
        out.append({"name": name, "in": "path", "required": True, "schema": STRING,
                    "description": op.path_params.get(name, "")})
    for p in op.params:
        out.append({"name": p.name, "in": "query", "required": False, "schema": p.schema(),
                    "description": p.description + " (empty: as if absent)"})
    if op.listing:
        out.append({"name": "If-None-Match", "in": "header", "required": False, "schema": STRING,
                    "description": "an `ETag` from an earlier answer (comma-separated list allowed; `*` is not honoured)"})
        out.append({"name": "X-Readside-After", "in": "header", "required": False, "schema": STRING,
                    "description": "read-your-writes: `<topic>:<partition>:<offset>[,...]` (at most 16, on the "
                                   f"topics this endpoint's projection reads, prefix `{prefix}` included); "
                                   "waits up to 2 s for the projection to pass them"})
    elif op.etag:
        out.append({"name": "If-None-Match", "in": "header", "required": False, "schema": STRING})
    return out


def _responses(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    timing = {"Server-Timing": {"$ref": "#/components/headers/Server-Timing"}}
    for status in op.statuses():
        if status == 200:
            headers = {"Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, **timing}
            if op.listing:
                headers |= {h: {"$ref": f"#/components/headers/{h}"} for h in
                            ("ETag", "X-Cache", "X-Readside-Lag", "X-Readside-Consistency", "X-Readside-Dead-Letters")}
            elif op.etag:
                headers["ETag"] = {"$ref": "#/components/headers/ETag"}
            out["200"] = {"description": _REASONS[200], "headers": headers,
                          "content": {op.media: {"schema": op.body or {}}}}
        elif status == 304:
            headers = {h: {"$ref": f"#/components/headers/{h}"} for h in ("ETag", "Cache-Control")}
            out["304"] = {"description": _REASONS[304], "headers": headers}
        else:
            description = op.errors.get(status) or _REASONS.get(status, "")
            headers = dict(timing)
            if status == 401:
                headers["WWW-Authenticate"] = _header('`Bearer realm="readside"`')
            out[str(status)] = {"description": description, "headers": headers, "content": problem}
    return out


def openapi_document(routes: list[Any], *, prefix: str = "", version: str = "") -> dict[str, Any]:
    """The document for ``routes`` (a Starlette app's); ``prefix`` is the topic prefix named in
    ``X-Readside-After``. Raises ``ValueError`` for a route whose handler has no ``Operation``."""
    paths: dict[str, Any] = {}
    for route in routes:
        op: Operation | None = getattr(route.endpoint, "operation", None)
        if op is None:
            raise ValueError(f"route {route.path} has no Operation: decorate its handler with @documented")
        item: dict[str, Any] = {
            "summary": op.summary,
            "operationId": "get" + re.sub(r"[^A-Za-z0-9]+", "_", openapi_path(route.path)).rstrip("_"),
            "parameters": _parameters(route.path, op, prefix),
            "responses": _responses(op),
        }
        if op.description:
            item["description"] = op.description
        if op.auth is None:
            item["security"] = []  # public
        elif op.auth != "token":
            item["description"] = (item.get("description", "") + f" Needs the token's role `{op.auth}`.").strip()
        paths[openapi_path(route.path)] = {"get": item}
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "Readside query API",
            "version": version or _version(),
            "description": "Read models of the core app's events. Only GET (HEAD alike); any other method is a "
                           "405 problem with `Allow: GET, HEAD`, an unknown path a 404 problem; a request head over "
                           "`READSIDE_HTTP_MAX_HEADER_BYTES` is a 431 problem, one not complete within "
                           "`READSIDE_HTTP_HEADER_TIMEOUT` a 408 problem (both close the connection). Errors are "
                           "RFC 9457 problems (`application/problem+json`, `Cache-Control: no-store`). Guide: "
                           "docs/api.md.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "the viewer is the token's `sub`; `exp` required; `roles` open `technician` "
                               "and `admin` endpoints",
            }},
            "schemas": {"Problem": PROBLEM},
            "headers": _HEADERS,
        },
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("readside")
    except PackageNotFoundError:
        return "0"


# -- GET /openapi.json -----------------------------------------------------------------------

OPENAPI = Operation(
    "This document (OpenAPI 3.1)", auth=None, body={"type": "object", "required": ["openapi", "paths"]},
    etag=True, query=False, cache_control="public, max-age=300",
)


@documented(OPENAPI)
async def serve_openapi(request: Request, ctx: Any, timing: Any) -> Response:
    state = request.app.state
    cached = getattr(state, "openapi", None)
    if cached is None:
        body = dumps(openapi_document(request.app.routes, prefix=ctx.settings.topic_prefix))
        # weak, like every ETag here: it names the content whatever the coding (gzip)
        cached = state.openapi = (body, 'W/"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"')
    body, tag = cached
    headers = {"ETag": tag, "Cache-Control": OPENAPI.cache_control}
    sent = {t.strip().removeprefix("W/") for t in request.headers.get("if-none-match", "").split(",")}
    if tag.removeprefix("W/") in sent:  # the weak comparison (RFC 9110 §8.8.3.2)
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
