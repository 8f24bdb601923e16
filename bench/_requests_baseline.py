"""The compute-on-read technician views that the requests read models replace, served like the real API.

Same stack as ``readside.api.app`` (``bench._common.baseline_starlette``); only the queries differ.
Over the normalized tables ``bench.requests_views`` fills (``BASELINE_DDL``: ``req_base``,
``req_assignees_base``, ``req_messages_base``, ``req_reads_base``, indexed by
``BASELINE_INDEXES``) it counts every view with one ``count(*) FILTER (...)`` pass over the
scope's requests (assignees aggregated by ``GROUP BY``), and assembles the page's items
(assignees, latest message, unread flags) with subqueries. The body is byte-identical to the
projection's (the bench checks it).

Run: ``python -m bench._requests_baseline --port 8001 [--workers N]`` with ``READSIDE_*`` set.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from bench._common import baseline_starlette
from readside.api.http import PRIVATE, Context, Timing, json_response
from readside.api.params import Query
from readside.readmodels.requests.views import TICKET_TYPES, VIEWS, window_starts
from readside.readmodels.threads.fold import normalize_text
from readside.shared.jsonbytes import dumps
from readside.shared.settings import Settings

BASELINE_DDL = """
CREATE TABLE req_base (
    request_id text COLLATE "C" PRIMARY KEY, requester_id text COLLATE "C" NOT NULL, business_unit_id int8 NOT NULL,
    title text NOT NULL, priority text NOT NULL, status text NOT NULL, parent_id text COLLATE "C",
    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, solved_at timestamptz);
CREATE TABLE req_assignees_base (request_id text COLLATE "C" NOT NULL, technician_id text COLLATE "C" NOT NULL);
CREATE TABLE req_messages_base (
    request_id text COLLATE "C" NOT NULL, message_id text COLLATE "C" NOT NULL, sender_role text NOT NULL,
    content text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE req_reads_base (
    request_id text COLLATE "C" NOT NULL, reader_role text NOT NULL, read_at timestamptz NOT NULL,
    read_up_to timestamptz NOT NULL);
"""
BASELINE_INDEXES = """
CREATE INDEX req_base_updated ON req_base (updated_at DESC, request_id DESC);
CREATE INDEX req_base_bu_updated ON req_base (business_unit_id, updated_at DESC, request_id DESC);
CREATE INDEX req_base_status ON req_base (status, updated_at DESC);
CREATE INDEX req_base_created ON req_base (created_at);
CREATE INDEX req_base_solved ON req_base (solved_at) WHERE status = 'solved';
ALTER TABLE req_assignees_base ADD PRIMARY KEY (request_id, technician_id);
CREATE INDEX req_assignees_base_tech ON req_assignees_base (technician_id, request_id);
ALTER TABLE req_messages_base ADD PRIMARY KEY (request_id, message_id);
CREATE INDEX req_messages_base_latest ON req_messages_base (request_id, created_at DESC, message_id DESC);
CREATE INDEX req_reads_base_latest ON req_reads_base (request_id, reader_role, read_at DESC, read_up_to DESC);
"""


PG_OPTIONS = "-c TimeZone=UTC -c plan_cache_mode=force_custom_plan -c work_mem=64MB"
_VIEW_SQL = {
    "unassigned": "unsolved AND NOT assigned",
    "all_unsolved": "unsolved",
    "my_unsolved": "unsolved AND mine",
    "recently_updated": "updated_at >= %(recently_updated)s",
    "recently_solved": "status = 'solved' AND solved_at >= %(recently_solved)s",
    "all_your_requests": "mine",
    "urgent_high_priority": "unsolved AND priority IN ('urgent', 'high')",
    "pending_requester_response": "status = 'pending_requester'",
    "pending_subtask": "status = 'pending_subtask'",
    "new_today": "created_at >= %(new_today)s",
    "in_progress": "status = 'in_progress'",
}
_KIND = {"all": "true", "parents": "parent_id IS NULL", "subtasks": "parent_id IS NOT NULL"}
_SCOPED = """
SELECT r.*, r.status NOT IN ('solved', 'closed') AS unsolved,
       a.request_id IS NOT NULL AS assigned, coalesce(a.mine, false) AS mine
FROM req_base r
LEFT JOIN (SELECT request_id, bool_or(technician_id = %(tech)s) AS mine FROM req_assignees_base GROUP BY request_id) a
       ON a.request_id = r.request_id
{where}
"""


def counts_sql(view: str, bu: int | None) -> str:
    where = "WHERE r.business_unit_id = %(bu)s" if bu is not None else ""
    cols = [f"count(*) FILTER (WHERE {_VIEW_SQL[v]})" for v in VIEWS]
    cols += [f"count(*) FILTER (WHERE {_VIEW_SQL[view]} AND {_KIND[k]})" for k in ("parents", "subtasks")]
    return f"SELECT {', '.join(cols)} FROM ({_SCOPED.format(where=where)}) s"


def page_sql(view: str, bu: int | None, kind: str) -> str:
    member = _VIEW_SQL[view].replace("unsolved", "r.status NOT IN ('solved', 'closed')")
    member = member.replace("NOT assigned", "NOT EXISTS (SELECT 1 FROM req_assignees_base a WHERE a.request_id = r.request_id)")
    member = member.replace("mine", "EXISTS (SELECT 1 FROM req_assignees_base a WHERE a.request_id = r.request_id "
                                    "AND a.technician_id = %(tech)s)")
    where = f"WHERE {member} AND {_KIND[kind]}" + (" AND r.business_unit_id = %(bu)s" if bu is not None else "")
    marker = ("(SELECT read_up_to FROM req_reads_base x WHERE x.request_id = r.request_id AND x.reader_role = '{1}' "
              "ORDER BY read_at DESC, read_up_to DESC LIMIT 1)")
    unread = ("EXISTS (SELECT 1 FROM req_messages_base y WHERE y.request_id = r.request_id AND y.sender_role = '{0}' "
              "AND y.created_at > coalesce(" + marker + ", '-infinity'))")
    return f"""
SELECT r.request_id, r.title, r.status, r.priority, r.business_unit_id, r.requester_id,
       ARRAY(SELECT technician_id FROM req_assignees_base a WHERE a.request_id = r.request_id ORDER BY 1),
       r.parent_id, r.created_at, r.updated_at, r.solved_at, m.content, m.sender_role, m.created_at,
       {unread.format("technician", "requester")}, {unread.format("requester", "technician")}
FROM req_base r
LEFT JOIN LATERAL (SELECT content, sender_role, created_at FROM req_messages_base m WHERE m.request_id = r.request_id
                   ORDER BY created_at DESC, message_id DESC LIMIT 1) m ON true
{where}
ORDER BY r.updated_at DESC, r.request_id DESC OFFSET %(offset)s LIMIT %(limit)s
"""


def _item(row: tuple) -> dict:
    rid, title, status, priority, bu, requester, team, parent, created, updated, solved, content, role, at, r_unread, t_unread = row
    return {
        "id": rid, "title": title, "status": status, "priority": priority, "business_unit_id": bu,
        "requester_id": requester, "assignee_ids": team, "parent_id": parent, "is_subtask": parent is not None,
        "created_at": created, "updated_at": updated, "solved_at": solved,
        "last_message": {"content": normalize_text(content), "sender_role": role, "created_at": at} if at else None,
        "requester_unread": r_unread, "technician_unread": t_unread,
    }


async def baseline_query(conn: psycopg.AsyncConnection, tech: str, view: str, bu: int | None, kind: str,
                         page: int, per_page: int, now: datetime, with_page: bool = True) -> bytes:
    params = {"tech": tech, "bu": bu, "offset": (page - 1) * per_page, "limit": per_page, **window_starts(now)}
    row = await (await conn.execute(counts_sql(view, bu), params)).fetchone()
    counts = dict(zip(VIEWS, row))  # type: ignore[arg-type]
    filters = {"all": counts[view], "parents": row[-2], "subtasks": row[-1]}  # type: ignore[index]
    out = {"counts": counts, "filter_counts": filters}
    if not with_page:
        return dumps(out)
    items = [_item(r) for r in await (await conn.execute(page_sql(view, bu, kind), params)).fetchall()]
    return dumps({"data": items, **out, "total": filters[kind], "page": page, "per_page": per_page})


async def _baseline_views(request: Request, ctx: Context, timing: Timing) -> Response:
    viewer = ctx.auth(request)
    viewer.require("technician")
    counts_only = request.url.path.endswith("/counts")
    q = Query(request, frozenset({"view", "business_unit_id"} if counts_only else
                                 {"view", "business_unit_id", "ticket_type", "page", "per_page"}))
    view = q.choice("view", VIEWS, "unassigned")
    bu = None if q.text("business_unit_id") is None else q.integer("business_unit_id", 0, -(2**63), 2**63 - 1)
    kind = q.choice("ticket_type", TICKET_TYPES, "all")
    page, per_page = q.integer("page", 1, 1, 2**31 - 1), q.integer("per_page", 20, 1, 100)
    async with timing.connection(ctx.pool) as conn:
        body = await baseline_query(conn, viewer.sub, view, bu, kind, page, per_page, datetime.now(UTC), not counts_only)  # type: ignore[arg-type]
    return json_response(body, None, PRIVATE)


def baseline_app(settings: Settings) -> Starlette:
    return baseline_starlette(settings, {"/v1/requests/technician-views": _baseline_views,
                                         "/v1/requests/technician-views/counts": _baseline_views}, PG_OPTIONS)


def baseline_from_env() -> Starlette:
    return baseline_app(Settings.from_env())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._requests_baseline")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    import uvicorn

    # The same server options as ``readside api`` (readside.cli.cmd_api).
    uvicorn.run("bench._requests_baseline:baseline_from_env", factory=True, host="127.0.0.1", port=args.port,
                workers=args.workers, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
