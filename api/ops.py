"""Operations endpoints: liveness, readiness, Prometheus metrics, projection status."""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import Response

from api.http import Context, Timing, json_response
from api.params import Query
from api.problems import unavailable
from projector.status import collect
from shared.jsonbytes import dumps

__all__ = ["admin_projections", "healthz", "metrics_endpoint", "readyz"]


async def healthz(request: Request, ctx: Context, timing: Timing) -> Response:
    return json_response(dumps({"status": "ok"}), None, "no-store", vary=False)


async def readyz(request: Request, ctx: Context, timing: Timing) -> Response:
    try:
        async with asyncio.timeout(2.0), timing.connection(ctx.pool) as conn:
            await conn.execute("SELECT 1")
    except TimeoutError:
        raise unavailable("the database did not answer within 2 s") from None
    return json_response(dumps({"status": "ready"}), None, "no-store", vary=False)


def metrics_endpoint(registry: CollectorRegistry):  # noqa: ANN201
    async def metrics(request: Request, ctx: Context, timing: Timing) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})

    return metrics


class _Timed:
    """The pool as ``collect`` wants it, with the database time in Server-Timing (and 503 when down)."""

    def __init__(self, pool: AsyncConnectionPool, timing: Timing) -> None:
        self.pool, self.timing = pool, timing

    def connection(self):  # noqa: ANN201
        return self.timing.connection(self.pool)


async def admin_projections(request: Request, ctx: Context, timing: Timing) -> Response:
    """What ``readside status --json`` prints: the same computation (projector/status.py)."""
    viewer = ctx.auth(request)
    viewer.require("admin")
    Query(request, frozenset())
    status = await collect(
        _Timed(ctx.pool, timing), ctx.heads, prefix=ctx.settings.topic_prefix, stall_after=ctx.settings.stall_after
    )
    return json_response(dumps(status.as_json()), None, "no-store")
