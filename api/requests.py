"""``/v1/requests/technician-views`` and ``.../counts``: the support desk's views, technicians only.

Precedence: 401 (no valid token), then 403 (no role ``technician``), then 400 (parameters).
``view`` defaults to ``unassigned``, ``ticket_type`` to ``all``; ``page`` >= 1 (a page past the end
is empty with the right ``total``); ``per_page`` 1..100 (default 20); ``business_unit_id`` is an
integer, empty meaning "not given"; technicians see every business unit.

Caching: the body depends on the scope's version (``requests:*`` or ``requests:<unit>``, bumped by
the projector) and — through the time windows (``recently_updated``, ``recently_solved``,
``new_today``) — on the clock, which moves requests out of a window with no event at all. So the
ETag and the cache key also carry the current UTC minute: a response (or a 304) is at most one
minute behind the clock's effect on the windows, and never behind an event by more than the
projection lag. Each body is rendered with the exact time of the request.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from readside.api.http import PRIVATE, Context, Timing
from readside.api.openapi import BOOLEAN, INTEGER, STRING, TIME, Operation, array, counts, documented, enum, nullable, obj
from readside.api.params import Choice, Integer, Query, names
from readside.api.serving import Spec, serve
from readside.readmodels.requests import queries
from readside.readmodels.requests.scopes import version_key
from readside.readmodels.requests.views import TICKET_TYPES, VIEWS
from readside.schemas.requests import Priority, Role, Status
from readside.shared.jsonbytes import dumps

__all__ = ["technician_counts", "technician_views"]

MAX_PAGE = 2**31 - 1
INT8 = (-(2**63), 2**63 - 1)


VIEW = Choice("view", "which view", VIEWS, "unassigned")
UNIT = Integer("business_unit_id", "only this business unit (absent: all)", None, *INT8)
TICKET_TYPE = Choice("ticket_type", "parents, subtasks or both", TICKET_TYPES, "all")
PAGE = Integer("page", "page number (past the end: empty, with the right total)", 1, 1, MAX_PAGE)
PER_PAGE = Integer("per_page", "items per page", 20, 1, 100)
VIEWS_PARAMS = (VIEW, UNIT, TICKET_TYPE, PAGE, PER_PAGE)
COUNTS_PARAMS = (VIEW, UNIT)
_COUNTS = {"counts": counts(VIEWS), "filter_counts": counts(TICKET_TYPES)}
VIEWS_BODY = obj({
    "data": array(obj({
        "id": STRING, "title": STRING, "status": enum(Status), "priority": enum(Priority),
        "business_unit_id": INTEGER, "requester_id": STRING, "assignee_ids": array(STRING),
        "parent_id": nullable(STRING), "is_subtask": BOOLEAN, "created_at": TIME, "updated_at": TIME,
        "solved_at": nullable(TIME),
        "last_message": nullable(obj({"content": STRING, "sender_role": enum(Role), "created_at": TIME})),
        "requester_unread": BOOLEAN, "technician_unread": BOOLEAN,
    })),
    **_COUNTS, "total": INTEGER, "page": INTEGER, "per_page": INTEGER,
})
COUNTS_BODY = obj(_COUNTS, open_=False)


def _business_unit(q: Query) -> int | None:
    return UNIT.read(q)


def _counts(counts: queries.Counts, view: str) -> dict[str, dict[str, int]]:
    return {
        "counts": {v: counts.total(v) for v in VIEWS},
        "filter_counts": {t: counts.total(view, t) for t in TICKET_TYPES},
    }


def _clock(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M")


@documented(Operation("The support desk's request views", "Order: `updated_at` then `id`, descending.",
                       VIEWS_PARAMS, auth="technician", body=VIEWS_BODY, listing=True))
async def technician_views(request: Request, ctx: Context, timing: Timing) -> Response:
    viewer = ctx.auth(request)
    viewer.require("technician")
    q = Query(request, names(VIEWS_PARAMS))
    view = VIEW.value(q)
    business_unit = _business_unit(q)
    ticket_type, page, per_page = TICKET_TYPE.value(q), PAGE.value(q), PER_PAGE.value(q)
    now = datetime.now(UTC)
    scope = "\x1f".join(
        ("technician-views", viewer.sub, view, str(business_unit), str(ticket_type), str(page), str(per_page), _clock(now))
    )

    async def render(conn) -> tuple[int, int, bytes]:  # noqa: ANN001
        result = await queries.technician_views(
            conn, viewer.sub, business_unit, now, (view, ticket_type, (page - 1) * per_page, per_page)
        )
        tail = dumps(
            {**_counts(result.counts, view), "total": result.counts.total(view, ticket_type), "page": page, "per_page": per_page}
        )
        return result.generation, result.version, b'{"data":[' + result.items + b"]," + tail[1:]

    return await serve(
        request, ctx, timing,
        Spec("requests", version_key(business_unit), scope, render,
             lambda conn: queries.scope_version(conn, business_unit), PRIVATE),
    )


@documented(Operation("Counts of every view", params=COUNTS_PARAMS, auth="technician", body=COUNTS_BODY,
                       listing=True))
async def technician_counts(request: Request, ctx: Context, timing: Timing) -> Response:
    viewer = ctx.auth(request)
    viewer.require("technician")
    q = Query(request, names(COUNTS_PARAMS))
    view = VIEW.value(q)
    business_unit = _business_unit(q)
    now = datetime.now(UTC)
    scope = "\x1f".join(("technician-counts", viewer.sub, view, str(business_unit), _clock(now)))

    async def render(conn) -> tuple[int, int, bytes]:  # noqa: ANN001
        result = await queries.technician_views(conn, viewer.sub, business_unit, now)
        return result.generation, result.version, dumps(_counts(result.counts, view))

    return await serve(
        request, ctx, timing,
        Spec("requests", version_key(business_unit), scope, render,
             lambda conn: queries.scope_version(conn, business_unit), PRIVATE),
    )
