"""``/v1/threads/*``: the viewer's inbox, its summary, and one thread's history."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from readside.api.http import PRIVATE, Context, Timing, parse_position
from readside.api.openapi import BOOLEAN, CURSOR, INTEGER, STRING, TIME, Operation, array, documented, enum, nullable, obj
from readside.api.params import MAX_LENGTH, Choice, Integer, Query, Text, names
from readside.api.problems import not_found
from readside.api.serving import Spec, serve
from readside.readmodels.threads import queries, scopes
from readside.schemas.threads import AttachmentKind, MessageType, SenderType
from readside.shared.jsonbytes import dumps, rfc3339

__all__ = ["messages", "preview", "summary"]

ROLES = ("client", "provider")
ROLE = Choice("role", "only threads where the viewer has this side (absent: both)", ROLES)
CURSOR_PARAM = Text("cursor", "the `next_cursor` of the previous page (same other parameters and token)")
PREVIEW_LIMIT = Integer("limit", "items per page", 20, 1, 100)
PREVIEW_PARAMS = (ROLE, PREVIEW_LIMIT, CURSOR_PARAM)
MESSAGES_LIMIT = Integer("limit", "messages per page", 50, 1, 200)
MESSAGES_PARAMS = (MESSAGES_LIMIT, CURSOR_PARAM)

SENDER = enum(SenderType)
PREVIEW_BODY = obj({
    "items": array(obj({
        "thread_id": STRING,
        "counterparty": obj({"name": STRING, "avatar_url": nullable(STRING)}),
        "last_message_preview": nullable(STRING),
        "last_actor": nullable(SENDER),
        "last_ts": TIME,
        "unread_count": INTEGER,
        "state": STRING,
        "meta": obj({"service_type": STRING, "paid": BOOLEAN, "message_count": INTEGER}),
        "pinned": BOOLEAN,
        "preview_key": nullable(STRING),
        "preview_args": nullable({"type": "object"}),
    })),
    "next_cursor": CURSOR,
})
SUMMARY_BODY = obj({"unread_total": INTEGER, "thread_count": INTEGER}, open_=False)
MESSAGES_BODY = obj({
    "messages": array(obj({
        "message_id": STRING, "sender_id": nullable(STRING), "sender_type": SENDER,
        "message_type": enum(MessageType), "content": STRING,
        "system_key": nullable(STRING), "system_args": nullable({"type": "object"}),
        "attachment": nullable(obj({"kind": enum(AttachmentKind), "url": STRING})),
        "created_at": TIME,
    })),
    "has_more": BOOLEAN,
    "next_cursor": CURSOR,
})


@documented(Operation("The viewer's inbox", "Order: `last_ts` then `thread_id`, descending.",
                       PREVIEW_PARAMS, body=PREVIEW_BODY, listing=True))
async def preview(request: Request, ctx: Context, timing: Timing) -> Response:
    viewer = ctx.auth(request)
    q = Query(request, names(PREVIEW_PARAMS))
    role, limit, cursor = ROLE.read(q), PREVIEW_LIMIT.value(q), CURSOR_PARAM.read(q)
    bound = f"preview\x1f{viewer.sub}\x1f{role}\x1f{limit}"
    after = parse_position(ctx.cursors.decode(bound, cursor), ()) if cursor else None

    async def render(conn) -> tuple[int, int, bytes]:  # noqa: ANN001
        gen, version, (items, (ts, tid), more) = await queries.inbox_page(conn, viewer.sub, role, after, limit)
        next_cursor = ctx.cursors.encode(bound, [rfc3339(ts), tid]) if more else None
        return gen, version, b'{"items":[' + items + b'],"next_cursor":' + dumps(next_cursor) + b"}"

    return await serve(
        request, ctx, timing,
        Spec("threads", scopes.viewer(viewer.sub), f"{bound}\x1f{cursor or ''}", render,
             lambda conn: queries.viewer_version(conn, viewer.sub), PRIVATE),
    )


@documented(Operation("The viewer's unread total and thread count", params=(ROLE,), body=SUMMARY_BODY,
                       listing=True))
async def summary(request: Request, ctx: Context, timing: Timing) -> Response:
    viewer = ctx.auth(request)
    q = Query(request, names((ROLE,)))
    role = ROLE.read(q)

    async def render(conn) -> tuple[int, int, bytes]:  # noqa: ANN001
        gen, version, per_role = await queries.summary(conn, viewer.sub)
        picked = [per_role.get(r, (0, 0)) for r in ((role,) if role else ROLES)]
        return gen, version, dumps({"unread_total": sum(u for u, _ in picked), "thread_count": sum(c for _, c in picked)})

    return await serve(
        request, ctx, timing,
        Spec("threads", scopes.viewer(viewer.sub), f"summary\x1f{viewer.sub}\x1f{role}", render,
             lambda conn: queries.viewer_version(conn, viewer.sub), PRIVATE),
    )


@documented(Operation(
    "One thread's messages visible to the viewer", "Newest first. A thread the viewer is not part of is a 404, "
    "exactly as one that does not exist.", MESSAGES_PARAMS, body=MESSAGES_BODY, listing=True,
    errors={404: "No such thread for this viewer"}, path_params={"thread_id": "the thread's id"}))
async def messages(request: Request, ctx: Context, timing: Timing) -> Response:
    viewer = ctx.auth(request)
    thread_id = request.path_params["thread_id"]
    if "\x00" in thread_id or len(thread_id) > MAX_LENGTH:
        raise not_found(f"no thread {thread_id!r} for this viewer")
    q = Query(request, names(MESSAGES_PARAMS))
    limit, cursor = MESSAGES_LIMIT.value(q), CURSOR_PARAM.read(q)
    bound = f"messages\x1f{viewer.sub}\x1f{thread_id}\x1f{limit}"
    before = parse_position(ctx.cursors.decode(bound, cursor), ()) if cursor else None

    async def access(conn) -> tuple[str, int, int]:  # noqa: ANN001
        found = await queries.thread_access(conn, thread_id, viewer.sub)
        if found is None:
            raise not_found(f"no thread {thread_id!r} for this viewer")
        return found

    async def render(conn) -> tuple[int, int, bytes]:  # noqa: ANN001
        found = await queries.message_page(conn, thread_id, viewer.sub, before, limit)
        if found is None:
            raise not_found(f"no thread {thread_id!r} for this viewer")
        gen, version, (items, (ts, mid), more) = found
        next_cursor = ctx.cursors.encode(bound, [rfc3339(ts), mid]) if more else None
        body = (
            b'{"messages":[' + items + b'],"has_more":' + (b"true" if more else b"false")
            + b',"next_cursor":' + dumps(next_cursor) + b"}"
        )
        return gen, version, body

    async def pg_version(conn) -> tuple[int, int]:  # noqa: ANN001
        return (await access(conn))[1:]

    return await serve(
        request, ctx, timing,
        Spec("threads", scopes.thread(thread_id), f"{bound}\x1f{cursor or ''}", render, pg_version, PRIVATE,
             access=access),
    )
