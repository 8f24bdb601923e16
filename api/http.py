"""The request plumbing shared by every endpoint: timing, problems, ETags, ready-bytes responses."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.requests import Request
from starlette.responses import Response

from readside.api.auth import Authenticator
from readside.api.cursors import CursorCodec, position_id, position_time
from readside.api.problems import Problem, bad_param, unavailable
from readside.shared.cache import Cache
from readside.shared.kafka import BrokerHeads
from readside.shared.settings import Settings

__all__ = ["Context", "StatusCollector", "Timing", "endpoint", "json_response", "parse_position"]

log = logging.getLogger(__name__)

NOT_MIGRATED = "the read tables do not exist yet: run `readside migrate` (the projector also migrates when it starts)"
PRIVATE = "private, no-cache"
PUBLIC = "public, max-age=30"

# ``(pool, broker heads, *, prefix, stall_after) -> status`` with ``as_json()``: what
# ``readside status --json`` prints (``readside.projector.status.collect``).
StatusCollector = Callable[..., Awaitable[Any]]


@dataclass
class Context:
    settings: Settings
    pool: AsyncConnectionPool
    auth: Authenticator
    cursors: CursorCodec
    cache: Cache | None = None
    etag_key: bytes = b""
    lag: dict[str, tuple[float, str]] = field(default_factory=dict)
    renders: Any = None  # prometheus Counter: bodies rendered from PostgreSQL, per projection
    metrics: Any = None  # readside.api.metrics.ApiMetrics: cache hits and misses, SSE clients...
    heads: BrokerHeads | None = None  # the broker's high watermarks, for /v1/admin/projections
    changes: Any = None  # readside.api.changes.Hub when Redis is configured (GET /v1/events)
    ryw: Any = None  # readside.api.ryw.Watcher: the process's shared X-Readside-After waits
    replicas: Any = None  # readside.api.replicas.Replicas when READSIDE_DATABASE_REPLICA_URLS is set
    # What the API reads of the engine, handed in by the composition root (readside.serve): the
    # API never imports the projector. ``topics``: each read model's topics, prefixed;
    # ``status``: the projection status collector (``readside.projector.status.collect``).
    topics: Mapping[str, frozenset[str]] = field(default_factory=dict)
    status: StatusCollector | None = None


@dataclass
class Timing:
    started: float = field(default_factory=time.perf_counter)
    db: float = 0.0
    cache: float = 0.0

    @asynccontextmanager
    async def connection(self, pool: AsyncConnectionPool) -> AsyncIterator[psycopg.AsyncConnection]:
        t0 = time.perf_counter()
        try:
            async with pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            log.warning("database unavailable: %s", exc)
            raise unavailable("the database is unavailable; retry shortly") from None
        except psycopg.errors.UndefinedTable as exc:  # an API started before the first migration
            log.warning("read tables missing: %s", exc)
            raise unavailable(NOT_MIGRATED) from None
        finally:
            self.db += time.perf_counter() - t0

    def header(self) -> str:
        total = (time.perf_counter() - self.started) * 1000
        app = total - (self.db + self.cache) * 1000
        return f"cache;dur={self.cache * 1000:.2f}, db;dur={self.db * 1000:.2f}, app;dur={app:.2f}, total;dur={total:.2f}"


Handler = Callable[[Request, Context, Timing], Awaitable[Response]]


def endpoint(ctx_getter: Callable[[Request], Context], handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        timing = Timing()
        try:
            response = await handler(request, ctx_getter(request), timing)
        except Problem as problem:
            return problem.response(timing.header())
        except Exception:  # a bug: still a problem+json, never a bare text/plain 500
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return Problem(500, "internal error; it has been logged").response(timing.header())
        # Appended as is (``response.headers[...] =`` builds a MutableHeaders and scans for it: no
        # handler sets Server-Timing)
        response.raw_headers.append((b"server-timing", timing.header().encode("latin-1")))
        return response

    run.operation = getattr(handler, "operation", None)  # type: ignore[attr-defined]  # api/openapi.py
    return run


def json_response(body: bytes, etag: str | None, cache_control: str, vary: bool = True) -> Response:
    headers = {"Cache-Control": cache_control}
    if etag:
        headers["ETag"] = etag
    if vary:
        headers["Vary"] = "Authorization"
    return Response(body, media_type="application/json", headers=headers)


def parse_position(position: list, kinds: tuple[type, ...]) -> tuple:
    """A cursor position ``[rfc3339, id]`` back into ``(datetime, id)``; anything else is a 400
    (see ``readside.api.cursors``: odd ids and times never reach the database)."""
    if len(position) != 2:
        raise bad_param("cursor is not valid")
    return position_time(position[0]), position_id(position[1])
