"""``/v1/threads/*``: the viewer's inbox, its summary, and one thread's history."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api import queries
from api.http import PRIVATE, Context, Timing, parse_position
from api.params import Query
from api.problems import not_found
from api.serving import Spec, serve
from shared.jsonbytes import dumps, rfc3339

__all__ = ["messages", "preview", "summary"]

ROLES = ("client", "provider")


async def preview(request: Request, ctx: Context, timing: Timing) -> Response:
    viewer = ctx.auth(request)
    q = Query(request, frozenset({"role", "limit", "cursor"}))
    role = q.choice("role", ROLES)
    limit = q.integer("limit", 20, 1, 100)
    cursor = q.text("cursor")
    bound = f"preview\x1f{viewer.sub}\x1f{role}\x1f{limit}"
    after = parse_position(ctx.cursors.decode(bound, cursor), ()) if cursor else None

    async def render(conn) -> tuple[int, bytes]:  # noqa: ANN001
        version, rows = await queries.inbox_page(conn, viewer.sub, role, after, limit + 1)
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            _, ts, tid = rows[-1]
            next_cursor = ctx.cursors.encode(bound, [rfc3339(ts), tid])
        return version, b'{"items":[' + b",".join(r[0] for r in rows) + b'],"next_cursor":' + dumps(next_cursor) + b"}"

    return await serve(
        request, ctx, timing,
        Spec("threads", f"viewer:{viewer.sub}", f"{bound}\x1f{cursor or ''}", render,
             lambda conn: queries.viewer_version(conn, viewer.sub), PRIVATE),
    )


async def summary(request: Request, ctx: Context, timing: Timing) -> Response:
    viewer = ctx.auth(request)
    q = Query(request, frozenset({"role"}))
    role = q.choice("role", ROLES)

    async def render(conn) -> tuple[int, bytes]:  # noqa: ANN001
        version, per_role = await queries.summary(conn, viewer.sub)
        picked = [per_role.get(r, (0, 0)) for r in ((role,) if role else ROLES)]
        return version, dumps({"unread_total": sum(u for u, _ in picked), "thread_count": sum(c for _, c in picked)})

    return await serve(
        request, ctx, timing,
        Spec("threads", f"viewer:{viewer.sub}", f"summary\x1f{viewer.sub}\x1f{role}", render,
             lambda conn: queries.viewer_version(conn, viewer.sub), PRIVATE),
    )


async def messages(request: Request, ctx: Context, timing: Timing) -> Response:
    viewer = ctx.auth(request)
    thread_id = request.path_params["thread_id"]
    if "\x00" in thread_id:
        raise not_found(f"no thread {thread_id!r} for this viewer")
    q = Query(request, frozenset({"limit", "cursor"}))
    limit = q.integer("limit", 50, 1, 200)
    cursor = q.text("cursor")
    bound = f"messages\x1f{viewer.sub}\x1f{thread_id}\x1f{limit}"
    before = parse_position(ctx.cursors.decode(bound, cursor), ()) if cursor else None

    async def access(conn) -> tuple[str, int]:  # noqa: ANN001
        found = await queries.thread_access(conn, thread_id, viewer.sub)
        if found is None:
            raise not_found(f"no thread {thread_id!r} for this viewer")
        return found

    async def render(conn) -> tuple[int, bytes]:  # noqa: ANN001
        found = await queries.message_page(conn, thread_id, viewer.sub, before, limit + 1)
        if found is None:
            raise not_found(f"no thread {thread_id!r} for this viewer")
        version, rows = found
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            _, ts, mid = rows[-1]
            next_cursor = ctx.cursors.encode(bound, [rfc3339(ts), mid])
        body = (
            b'{"messages":[' + b",".join(r[0] for r in rows)
            + b'],"has_more":' + (b"true" if next_cursor else b"false")
            + b',"next_cursor":' + dumps(next_cursor) + b"}"
        )
        return version, body

    async def pg_version(conn) -> int:  # noqa: ANN001
        return (await access(conn))[1]

    return await serve(
        request, ctx, timing,
        Spec("threads", f"thread:{thread_id}", f"{bound}\x1f{cursor or ''}", render, pg_version, PRIVATE,
             access=access),
    )
