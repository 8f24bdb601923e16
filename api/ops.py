"""Operations endpoints: liveness, readiness, Prometheus metrics, projection status.

``/metrics`` is served on the API's port unless ``READSIDE_METRICS_PORT`` is set: then only on
that port (``READSIDE_METRICS_HOST``, default 127.0.0.1), and the public port answers 404 for it.
Either way a scrape holds every worker's metrics (api/metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from readside.api.http import NOT_MIGRATED, Context, Timing, json_response
from readside.api.metrics import ApiMetrics
from readside.api.openapi import BOOLEAN, INTEGER, NUMBER, STRING, Operation, array, documented, nullable, obj
from readside.api.params import Query
from readside.api.problems import unavailable
from readside.shared.jsonbytes import dumps
from readside.shared.listen import listening_socket
from readside.shared.settings import Settings

# Made by every migration (`readside migrate [--only ...]`, or the projector at its start): until
# they exist nothing is migrated. A projection left out of the migration answers 503 on its own
# endpoints (a missing table is a 503, see readside.api.http), not on /readyz.
_READ_TABLES = ["checkpoints", "dead_letters", "projections"]

__all__ = ["admin_projections", "bind_metrics", "healthz", "metrics_app", "metrics_endpoint", "readyz"]


_PARTITION = obj({
    "topic": STRING, "partition": INTEGER, "offset": INTEGER, "high_watermark": nullable(INTEGER),
    "lag": INTEGER, "lag_seconds": NUMBER, "checkpoint_at": nullable(STRING),
    "head_from": {"type": "string", "enum": ["broker", "partition_heads"]}, "stalled": BOOLEAN,
}, optional=("checkpoint_at", "head_from", "high_watermark"))
PROJECTIONS_BODY = obj({
    "projections": array(obj({
        "name": STRING, "version": INTEGER, "state": {"type": "string", "enum": ["live", "rebuilding"]},
        "stalled": BOOLEAN, "lag": INTEGER, "lag_seconds": NUMBER, "dead_letters": INTEGER,
        "skipped_unknown": INTEGER, "last_batch_at": nullable(STRING), "partitions": array(_PARTITION),
        "rebuild": nullable({"type": "object"}),
    }, optional=("last_batch_at", "rebuild", "version"))),
    "stall_after": NUMBER, "heads_from": STRING, "broker_error": nullable(STRING),
}, optional=("heads_from", "broker_error"))


@documented(Operation("Liveness", auth=None, body=obj({"status": {"const": "ok"}}), query=False,
                      cache_control="no-store"))
async def healthz(request: Request, ctx: Context, timing: Timing) -> Response:
    return json_response(dumps({"status": "ok"}), None, "no-store", vary=False)


@documented(Operation("Readiness: PostgreSQL answers and is migrated", auth=None,
                      body=obj({"status": {"const": "ready"}}), query=False, cache_control="no-store",
                      errors={503: "PostgreSQL does not answer within 2 s, or is not migrated"}))
async def readyz(request: Request, ctx: Context, timing: Timing) -> Response:
    try:
        async with asyncio.timeout(2.0), timing.connection(ctx.pool) as conn:
            cur = await conn.execute(
                "SELECT array_agg(t ORDER BY t) FROM unnest(%s::text[]) AS t WHERE to_regclass(t) IS NULL",
                (_READ_TABLES,),
            )
            (missing,) = await cur.fetchone()  # type: ignore[misc]
    except TimeoutError:
        raise unavailable("the database did not answer within 2 s") from None
    if missing:
        raise unavailable(f"{NOT_MIGRATED} (missing: {', '.join(missing)})")
    return json_response(dumps({"status": "ready"}), None, "no-store", vary=False)


def metrics_endpoint(api_metrics: ApiMetrics):  # noqa: ANN201
    @documented(Operation("Prometheus metrics (only here when READSIDE_METRICS_PORT is 0)", auth=None,
                          body={"type": "string"}, media="text/plain", query=False, cache_control="no-store"))
    async def metrics(request: Request, ctx: Context, timing: Timing) -> Response:
        return Response(api_metrics.render(), media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})

    return metrics


def metrics_app(api_metrics: ApiMetrics) -> Starlette:
    """``GET /metrics`` alone, for ``READSIDE_METRICS_PORT`` (the public app then has no /metrics)."""

    async def metrics(request: Request) -> Response:
        return Response(api_metrics.render(), media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})

    return Starlette(routes=[Route("/metrics", metrics)])


def bind_metrics(settings: Settings) -> socket.socket:
    """The metrics port's listening socket. ``SO_REUSEPORT``: each worker of ``readside api
    --workers N`` binds it and a scrape reaches one of them, as on the public port (and is
    answered with every worker's metrics)."""
    return listening_socket(
        settings.metrics_host, settings.metrics_port, setting="READSIDE_METRICS_PORT",
        otherwise="choose a free port, or 0 to serve /metrics on the API's port", reuse_port=True,
    )


class _Timed:
    """The pool as ``collect`` wants it, with the database time in Server-Timing (and 503 when down)."""

    def __init__(self, pool: AsyncConnectionPool, timing: Timing) -> None:
        self.pool, self.timing = pool, timing

    def connection(self) -> contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection]:
        return self.timing.connection(self.pool)


@documented(Operation("Projection status (what `readside status --json` prints)", auth="admin",
                      body=PROJECTIONS_BODY, cache_control="no-store",
                      errors={503: "PostgreSQL does not answer"}))
async def admin_projections(request: Request, ctx: Context, timing: Timing) -> Response:
    """What ``readside status --json`` prints: the same computation (projector/status.py, handed
    in as ``ctx.status``)."""
    viewer = ctx.auth(request)
    viewer.require("admin")
    Query(request, frozenset())
    assert ctx.status is not None, "the composition root (readside.serve) hands the API the status collector"
    status = await ctx.status(
        _Timed(ctx.pool, timing), ctx.heads, prefix=ctx.settings.topic_prefix, stall_after=ctx.settings.stall_after
    )
    return json_response(dumps(status.as_json()), None, "no-store")
