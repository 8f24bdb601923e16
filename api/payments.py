"""``GET /v1/threads/{thread_id}/payments``: what a thread's participants were paid, per currency
(the payments read model, ``readside.readmodels.payments``)."""

from __future__ import annotations

import psycopg
from starlette.requests import Request
from starlette.responses import Response

from readside.api.http import PRIVATE, Context, Timing
from readside.api.openapi import INTEGER, STRING, TIME, Operation, array, documented, nullable, obj
from readside.api.params import MAX_LENGTH, Query
from readside.api.problems import not_found
from readside.api.serving import Spec, serve
from readside.readmodels.payments import queries, scopes
from readside.shared.jsonbytes import dumps

__all__ = ["thread_payments"]

BODY = obj({
    "thread_id": STRING,
    "payments": INTEGER,
    "last_received_at": nullable(TIME),
    "totals": array(obj({"currency": STRING, "amount_cents": INTEGER, "payments": INTEGER})),
})


@documented(Operation(
    "What one thread's participants were paid", "Per currency, in code order: the sum of `amount_cents` and the "
    "number of payments (each `payment_id` counts once). A thread the viewer is not part of is a 404, exactly as "
    "one that does not exist.", (), body=BODY, listing=True, errors={404: "No such thread for this viewer"},
    path_params={"thread_id": "the thread's id"}))
async def thread_payments(request: Request, ctx: Context, timing: Timing) -> Response:
    viewer = ctx.auth(request)
    thread_id = request.path_params["thread_id"]
    if "\x00" in thread_id or len(thread_id) > MAX_LENGTH:
        raise not_found(f"no thread {thread_id!r} for this viewer")
    Query(request, frozenset())  # no parameters: an unknown one is a 400

    async def found(conn: psycopg.AsyncConnection) -> tuple[int, int, bytes | None]:
        row = await queries.thread_payments(conn, thread_id, viewer.sub)
        if row is None:
            raise not_found(f"no thread {thread_id!r} for this viewer")
        return row

    async def render(conn: psycopg.AsyncConnection) -> tuple[int, int, bytes]:
        gen, version, item = await found(conn)
        empty = {"thread_id": thread_id, "payments": 0, "last_received_at": None, "totals": []}
        return gen, version, item if item is not None else dumps(empty)

    async def pg_version(conn: psycopg.AsyncConnection) -> tuple[int, int]:
        return (await found(conn))[:2]

    return await serve(
        request, ctx, timing,
        Spec("payments", scopes.thread_key(thread_id), f"payments\x1f{viewer.sub}\x1f{thread_id}", render, pg_version,
             PRIVATE, access=found),
    )
