"""Operations endpoints: liveness, readiness, Prometheus metrics, projection status."""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from api.http import Context, Timing, json_response
from api.params import Query
from api.problems import unavailable
from shared.jsonbytes import dumps

__all__ = ["admin_projections", "healthz", "metrics", "projection_status", "readyz"]


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


STATUS_SQL = """
SELECT p.name, p.version, p.state, p.skipped_unknown, p.last_batch_at,
       (SELECT count(*) FROM dead_letters d WHERE d.projection = p.name) AS dead_letters,
       c.topic, c.partition, c.next_offset, h.high_watermark
FROM projections p
LEFT JOIN checkpoints c ON c.projection = p.name
LEFT JOIN partition_heads h ON h.topic = c.topic AND h.partition = c.partition
ORDER BY p.name, c.topic, c.partition
"""


async def projection_status(conn) -> list[dict]:  # noqa: ANN001
    """Per projection: version, state, dead letters, and per partition checkpoint, head, lag."""
    cur = await conn.execute(STATUS_SQL)
    out: dict[str, dict] = {}
    for name, version, state, skipped, last_batch, dead, topic, part, offset, head in await cur.fetchall():
        entry = out.setdefault(
            name,
            {"name": name, "version": version, "state": state, "dead_letters": dead,
             "skipped_unknown": skipped, "last_batch_at": last_batch, "partitions": []},
        )
        if topic is not None:
            hw = max(head or 0, offset)
            entry["partitions"].append(
                {"topic": topic, "partition": part, "offset": offset, "high_watermark": hw, "lag": hw - offset}
            )
    return list(out.values())


async def admin_projections(request: Request, ctx: Context, timing: Timing) -> Response:
    viewer = ctx.auth(request)
    viewer.require("admin")
    Query(request, frozenset())
    async with timing.connection(ctx.pool) as conn:
        projections = await projection_status(conn)
    return json_response(dumps({"projections": projections}), None, "no-store")
