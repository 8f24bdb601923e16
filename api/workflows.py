"""``GET /v1/workflows`` (the viewer's workflows, templates included) and ``GET /v1/templates``
(every template, any owner). Both need a token; deleted workflows are left out; order
``updated_at`` then ``id``, both descending; ``limit`` 1..100 (default 20). Weak ETags come from
the list's version (per owner, or the templates list; or the cache's copy of it), so a 304
costs one primary-key lookup or one cache GET.
"""

from __future__ import annotations

import psycopg
from starlette.requests import Request
from starlette.responses import Response

from readside.api.http import PRIVATE, Context, Timing, parse_position
from readside.api.openapi import BOOLEAN, CURSOR, INTEGER, STRING, TIME, Operation, array, documented, nullable, obj
from readside.api.params import Integer, Query, Text, names
from readside.api.serving import Spec, serve
from readside.readmodels.workflows import queries
from readside.readmodels.workflows.scopes import TEMPLATES_KEY, owner_key
from readside.shared.jsonbytes import dumps, rfc3339

__all__ = ["my_workflows", "templates"]


LIMIT = Integer("limit", "items per page", 20, 1, 100)
CURSOR_PARAM = Text("cursor", "the `next_cursor` of the previous page (same other parameters and token)")
PARAMS = (LIMIT, CURSOR_PARAM)
BODY = obj({
    "items": array(obj({
        "id": STRING, "name": STRING, "latest_version": nullable(INTEGER), "node_count": INTEGER,
        "edge_count": INTEGER, "is_template": BOOLEAN, "created_at": TIME, "updated_at": TIME,
    })),
    "next_cursor": CURSOR,
})


@documented(Operation("The viewer's workflows (templates included)", params=PARAMS, body=BODY, listing=True))
async def my_workflows(request: Request, ctx: Context, timing: Timing) -> Response:
    viewer = ctx.auth(request)
    return await _page(request, ctx, timing, "workflows", viewer.sub, owner_key(viewer.sub), viewer.sub)


@documented(Operation("Every template, any owner", params=PARAMS, body=BODY, listing=True))
async def templates(request: Request, ctx: Context, timing: Timing) -> Response:
    viewer = ctx.auth(request)
    return await _page(request, ctx, timing, "templates", viewer.sub, TEMPLATES_KEY, None)


async def _page(
    request: Request, ctx: Context, timing: Timing, name: str, viewer: str, key: str, owner_id: str | None
) -> Response:
    q = Query(request, names(PARAMS))
    limit, cursor = LIMIT.value(q), CURSOR_PARAM.read(q)
    bound = f"{name}\x1f{viewer}\x1f{limit}"
    after = parse_position(ctx.cursors.decode(bound, cursor), ()) if cursor else None

    async def render(conn: psycopg.AsyncConnection) -> tuple[int, int, bytes]:
        gen, version, (items, (ts, wid), more) = await queries.workflow_page(conn, key, owner_id, after, limit)
        next_cursor = ctx.cursors.encode(bound, [rfc3339(ts), wid]) if more else None
        return gen, version, b'{"items":[' + items + b'],"next_cursor":' + dumps(next_cursor) + b"}"

    return await serve(
        request, ctx, timing,
        Spec("workflows", key, f"{bound}\x1f{cursor or ''}", render, lambda conn: queries.list_version(conn, key), PRIVATE),
    )
