"""The hot routes without the middleware stack: one ASGI layer does what the stack would.

A profile of ``GET /v1/threads/preview`` served from Redis (py-spy, wrk -c16) put a third of the
process's time in the layers around the endpoint: ServerErrorMiddleware, the metrics, GZip,
ExceptionMiddleware, the router, Starlette's request/response wrapper — each an ASGI call with a
``send`` wrapper of its own. ``App`` (the API's Starlette) answers a GET of a route without path
parameters (``Hot``) itself: the endpoint, then the same metrics and access log as ``Metrics``,
and GZip exactly as ``GZipMiddleware`` would (same headers, same level). Everything else — other
methods (HEAD, the 405s), unknown paths, path parameters, a request with ``Origin`` while CORS is
configured, a ``root_path`` — goes through the whole stack, unchanged. The endpoints already turn
every exception into a problem+json answer (``readside.api.http.endpoint``).
"""

from __future__ import annotations

import functools
import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from readside.api.access_log import access
from readside.api.metrics import ApiMetrics

__all__ = ["App", "Hot", "Metrics"]

_EXCLUDED = frozenset(DEFAULT_EXCLUDED_CONTENT_TYPES)  # GZipMiddleware's defaults
Endpoint = Callable[[Request], Awaitable[Response]]


class Recorder:
    """Request count and latency per route, and with ``access_log`` one log line per request."""

    def __init__(self, metrics: ApiMetrics, access_log: bool) -> None:
        self.requests = metrics.requests
        self.latency = metrics.latency
        self.access_log = access_log
        self._children: dict[tuple[str, int], tuple] = {}  # (route, status) -> (count, latency): labels() once

    def __call__(self, scope: Scope, path: str, status: int, elapsed: float, cache: str | None) -> None:
        children = self._children.get((path, status))
        if children is None:
            children = self._children[(path, status)] = (self.requests.labels(path, str(status)),
                                                         self.latency.labels(path))
        children[0].inc()
        children[1].observe(elapsed)
        if self.access_log:
            access(scope, status, elapsed, cache)


class Metrics:
    """The middleware form of ``Recorder`` (every request the stack answers)."""

    def __init__(self, app: ASGIApp, recorder: Recorder) -> None:
        self.app = app
        self.record = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = [500]
        cache: list[str | None] = [None]
        access_log = self.record.access_log

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                if access_log:
                    cache[0] = next((v.decode("latin-1") for k, v in message.get("headers", ()) if k.lower() == b"x-cache"), None)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            self.record(scope, getattr(route, "path", "unmatched"), status[0], time.perf_counter() - started, cache[0])


class Hot:
    """What ``App`` needs to answer the hot routes itself."""

    def __init__(self, recorder: Recorder, *, gzip_min_bytes: int, gzip_level: int, cors: bool) -> None:
        self.record = recorder
        self.gzip_min = gzip_min_bytes
        self.gzip_level = gzip_level
        self.cors = cors
        self.routes: dict[str, tuple[Any, Endpoint]] = {}  # path -> (route, endpoint)


class App(Starlette):
    """The API's Starlette, with the hot routes answered by ``Hot`` (module docstring)."""

    hot: Hot | None = None

    def serve_hot(self, hot: Hot, routes: list[Any]) -> None:
        for route in routes:
            if not route.param_convertors and route.methods and "GET" in route.methods:
                hot.routes[route.path] = (route, route.endpoint)
        self.hot = hot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = self.hot
        if (hot is not None and scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path")
                and scope["path"] in hot.routes):
            gzip = False
            for name, value in scope["headers"]:
                if name == b"accept-encoding":
                    gzip = gzip or b"gzip" in value
                elif name == b"origin" and hot.cors:
                    break  # CORS answers it (the whole stack)
            else:
                return await self._hot(hot, scope, receive, send, gzip)
        await super().__call__(scope, receive, send)

    async def _hot(self, hot: Hot, scope: Scope, receive: Receive, send: Send, gzip: bool) -> None:
        started = time.perf_counter()
        route, endpoint = hot.routes[scope["path"]]
        scope["app"] = self
        scope["route"] = route
        status = 500
        response: Response | None = None
        try:
            response = await endpoint(Request(scope, receive))
            status = response.status_code
            body = getattr(response, "body", None)  # a streamed response has none: GZip leaves it too
            if body is not None and hot.gzip_min and len(body) >= hot.gzip_min:
                _compress(response, gzip, hot.gzip_level)
            await response(scope, receive, send)
        finally:
            cache = None
            if hot.record.access_log and response is not None:
                cache = next((v.decode("latin-1") for k, v in response.raw_headers if k == b"x-cache"), None)
            hot.record(scope, route.path, status, time.perf_counter() - started, cache)


def _compress(response: Response, gzip: bool, level: int) -> None:
    """What ``GZipMiddleware`` does to a whole body of at least its minimum size: ``Vary:
    Accept-Encoding`` and, for a client that accepts gzip, the body compressed (headers in the
    same order)."""
    raw = response.raw_headers
    media, vary = b"", -1
    for i, (name, value) in enumerate(raw):
        if name == b"content-encoding":
            return
        if name == b"content-type":
            media = value
        elif name == b"vary" and vary < 0:
            vary = i
    if response.status_code == 206 or _excluded(media):
        return
    if vary < 0:
        raw.append((b"vary", b"Accept-Encoding"))
    else:
        _set(raw, b"vary", raw[vary][1] + b", Accept-Encoding")
    if gzip:
        compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        body = compressor.compress(response.body) + compressor.flush()
        _set(raw, b"content-encoding", b"gzip")
        _set(raw, b"content-length", str(len(body)).encode())
        response.body = body


@functools.lru_cache(maxsize=64)
def _excluded(content_type: bytes) -> bool:
    media = content_type.decode("latin-1").partition(";")[0].strip().lower()
    return media in _EXCLUDED or media.partition("/")[0] + "/*" in _EXCLUDED or media.startswith("application/grpc+")


def _set(raw: list[tuple[bytes, bytes]], name: bytes, value: bytes) -> None:
    """``MutableHeaders.__setitem__``: the first ``name`` replaced in place (others dropped), or appended."""
    found = [i for i, (k, _) in enumerate(raw) if k == name]
    if not found:
        raw.append((name, value))
        return
    for i in reversed(found[1:]):
        del raw[i]
    raw[found[0]] = (name, value)
