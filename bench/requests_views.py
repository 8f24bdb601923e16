"""GET /v1/requests/technician-views (+ /counts): the projection versus compute-on-read, same data.

Generates support-desk requests straight into PostgreSQL with COPY (no broker): the normalized
tables a compute-on-read app would query (``req_base``, ``req_assignees_base``,
``req_messages_base``, ``req_reads_base``, with the best indexes we could give them) AND the
projection's rows for the very same requests (``RequestState`` built in Python, rendered with
``readside.readmodels.requests.fold.render`` into ``requests_rows``, ``request_assignees``,
``request_counts``, ``request_window_counts`` and ``request_versions``). Then, through real HTTP with a concurrent client:

- projection: the real API (``python -m readside.cli api``), 200 and the 304 path (If-None-Match);
- baseline: the same Starlette/uvicorn stack (``python -m bench.requests_views baseline``) that
  counts every view with one ``count(*) FILTER (...)`` pass over the scope's requests (assignees
  aggregated by ``GROUP BY``), and assembles the page's items (assignees, latest message, unread
  flags) with subqueries — the query these read models replace;
- both as bare SQL too (sequential, psycopg), to separate the query from the HTTP stack.

Both answers are compared byte for byte before timing. Default: 300k requests, 40 technicians,
12 business units, about 2 messages per request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from bench._common import baseline_starlette, bench_database, bench_settings, hammer, pct, say, server, table, use_uvloop
from readside.api.auth import make_token
from readside.api.http import PRIVATE, Context, Timing, json_response
from readside.api.params import Query
from readside.readmodels.registry import REGISTRY
from readside.readmodels.requests.fold import Created, RequestState, dump_state, render
from readside.readmodels.requests.queries import technician_views
from readside.readmodels.requests.views import TICKET_TYPES, VIEWS, counter_keys, window_keys, window_starts
from readside.readmodels.threads.fold import normalize_text
from readside.shared.db import migrate
from readside.shared.jsonbytes import dumps
from readside.shared.settings import Settings

STATUSES = ("new", "open", "in_progress", "pending_requester", "pending_subtask", "solved", "closed")
PRIORITIES = ("low", "normal", "high", "urgent")
TITLES = ("Printer on floor {n} is offline", "VPN drops every few minutes", "New laptop for {n} starters",
          "Cannot log in to the HR portal", "Projector in boardroom {n} flickers", "Request access to the finance share",
          "Email bounces from the supplier", "Install the design suite on {n} machines", "Wi-Fi slow in building {n}")
LINES = ("Hi, it's still not working this morning.", "Could you try restarting it?", "Done, thanks!",
         "I've ordered the part, it arrives on Thursday.", "Any update on this?",
         "  Please   see the attached\n\n screenshot.  ", "Closing this as solved; reopen if it comes back.",
         "We need this before the audit next week, it's quite urgent for the whole finance team, thank you so much.")


# -- data --------------------------------------------------------------------------------------------

def make_request(rng: random.Random, n: int, now: datetime, techs: list[str], parents: list[str]) -> tuple:
    """One request: its ``RequestState`` and its normalized rows (request, assignees, messages, reads)."""
    rid = f"r-{n:08d}"
    roll = rng.random()
    age = timedelta(days=rng.random()) if roll < 0.03 else timedelta(days=7 * rng.random()) if roll < 0.13 \
        else timedelta(days=7 + 358 * rng.random())
    created = (now - age).replace(microsecond=rng.randrange(1000) * 1000)
    if age > timedelta(days=30):
        status = rng.choices(STATUSES, weights=(1, 1, 1, 0.5, 0.5, 5, 91))[0]
    else:
        status = rng.choices(STATUSES, weights=(15, 20, 20, 10, 5, 20, 10))[0]
    span = min(age, timedelta(days=10))
    changed = created + span * rng.random() if status != "new" else created
    requester, bu = f"u-{rng.randrange(20_000) + 1}", rng.randrange(12) + 1
    priority = rng.choices(PRIORITIES, weights=(20, 50, 20, 10))[0]
    title = rng.choice(TITLES).format(n=rng.randint(1, 6))
    parent = rng.choice(parents) if parents and rng.random() < 0.15 else None
    if parent is None:
        parents.append(rid)
    has = 0.95 if status in ("solved", "closed") else 0.3 if status == "new" else 0.75
    team = sorted(rng.sample(techs, rng.choice((1, 1, 1, 2)))) if rng.random() < has else []
    assigned_at = created + (changed - created) * rng.random() if team else None
    messages = []
    for k in range(rng.choice((0, 1, 1, 2, 2, 3, 4, 5))):
        at = created + (changed - created) * rng.random()
        role = "requester" if rng.random() < 0.5 else "technician"
        messages.append((rid, f"m-{n:08d}-{k}", role, rng.choice(LINES), at))
    reads = []
    if messages and rng.random() < 0.7:
        up_to = max(m[4] for m in messages) - (changed - created) * rng.random() * 0.3
        reads.append((rid, "requester", up_to + timedelta(seconds=5), up_to))
    if messages and rng.random() < 0.7:
        for _tech in team or techs[:1]:
            up_to = max(m[4] for m in messages) - (changed - created) * rng.random() * 0.3
            reads.append((rid, "technician", up_to + timedelta(seconds=7), up_to))

    st = RequestState(rid, Created(requester, parent, created))
    st.status_log = ((changed, 0 if changed == created else 1, status),)
    st.priority, st.title, st.business_unit = (created, 0, priority), (created, 0, title), (created, 0, bu)
    if team:
        st.assigned = (assigned_at, tuple(team))  # type: ignore[assignment]
    times = [t for t in (changed if changed != created else None, assigned_at, *(m[4] for m in messages)) if t]
    st.last_event_at = max(times) if times else None
    if messages:
        last = max(messages, key=lambda m: (m[4], m[1]))
        st.last_message = (last[4], last[1], last[2], normalize_text(last[3]))
        st.technician_message_at = max((m[4] for m in messages if m[2] == "technician"), default=None)
        st.requester_message_at = max((m[4] for m in messages if m[2] == "requester"), default=None)
    for _, role, read_at, up_to in reads:
        if role == "requester":
            st.requester_read = max(st.requester_read or (read_at, up_to), (read_at, up_to))
        else:
            st.technician_read = max(st.technician_read or (read_at, up_to), (read_at, up_to))
    row = render(st)
    base = (rid, requester, bu, title, priority, status, parent, created, row.updated_at, row.solved_at)
    return st, row, base, [(rid, t) for t in team], messages, reads


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


def generate(url: str, args: argparse.Namespace) -> list[str]:
    """Fill both sides; return the technicians' ids."""
    rng = random.Random(args.seed)
    now = datetime.now(UTC)
    techs = [f"tech-{i}" for i in range(1, args.technicians + 1)]
    projection = REGISTRY["requests"]
    migrate(url, [projection])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BASELINE_DDL)
        # bulk-load without the projection's indexes, then build them (as a rebuild would)
        names = [r[0] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename IN ('requests_rows', 'request_assignees') "
            "AND indexname NOT LIKE '%%_pkey'")]
        for name in names:
            conn.execute(f'DROP INDEX "{name}"')
    copies = [
        ("requests_rows", "request_id, state, listed, status, priority, business_unit_id, is_subtask, unsolved, "
         "unassigned, urgent_high, created_at, updated_at, solved_at, item"),
        ("request_assignees", "request_id, technician_id, business_unit_id, is_subtask, unsolved, updated_at"),
        ("req_base", "request_id, requester_id, business_unit_id, title, priority, status, parent_id, created_at, "
         "updated_at, solved_at"),
        ("req_assignees_base", "request_id, technician_id"),
        ("req_messages_base", "request_id, message_id, sender_role, content, created_at"),
        ("req_reads_base", "request_id, reader_role, read_at, read_up_to"),
    ]
    conns = [psycopg.connect(url, autocommit=True) for _ in copies]
    counts: Counter = Counter()
    windows: Counter = Counter()
    parents: list[str] = []
    began, messages = time.perf_counter(), 0
    try:
        with contextlib.ExitStack() as stack:
            cp = [stack.enter_context(c.cursor().copy(f"COPY {t} ({cols}) FROM STDIN")) for c, (t, cols) in zip(conns, copies)]
            for n in range(args.requests):
                st, row, base, team, msgs, reads = make_request(rng, n, now, techs, parents)
                cp[0].write_row((row.request_id, dump_state(st), True, row.status, row.priority, row.business_unit_id,
                                 row.is_subtask, row.unsolved, row.unassigned, row.urgent_high, row.created_at,
                                 row.updated_at, row.solved_at, dumps(row.item)))
                for t in row.assignees:
                    cp[1].write_row((row.request_id, t, row.business_unit_id, row.is_subtask, row.unsolved, row.updated_at))
                cp[2].write_row(base)
                for r in team:
                    cp[3].write_row(r)
                for m in msgs:
                    cp[4].write_row(m)
                for r in reads:
                    cp[5].write_row(r)
                counts.update(counter_keys(row))
                windows.update(window_keys(row))
                messages += len(msgs)
                if n % 50_000 == 0 and n:
                    say(f"  generated {n}/{args.requests} requests, {time.perf_counter() - began:.0f}s")
    finally:
        for c in conns:
            c.close()
    say(f"generated {args.requests} requests, {messages} messages in {time.perf_counter() - began:.1f}s; indexing")
    keys = sorted(counts)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(projection.ddl)  # recreates the dropped indexes
        conn.execute(BASELINE_INDEXES)
        conn.execute(
            "INSERT INTO request_counts SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::bool[], %b::int8[])",
            ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [k[3] for k in keys], [counts[k] for k in keys]),
        )
        keys = sorted(windows)
        conn.execute(
            "INSERT INTO request_window_counts SELECT * FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::bool[], %b::int8[])",
            ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [k[3] for k in keys], [windows[k] for k in keys]),
        )
        conn.execute("INSERT INTO request_versions SELECT DISTINCT scope, 1 FROM request_counts")
        conn.execute("VACUUM ANALYZE")
    say(f"data ready in {time.perf_counter() - began:.1f}s")
    args.generated = messages
    return techs


# -- the compute-on-read baseline ------------------------------------------------------------------

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


# -- measuring -------------------------------------------------------------------------------------

CASES = (
    ("views", "/v1/requests/technician-views", "unassigned", None, "all", 1, 20),
    ("views my_unsolved", "/v1/requests/technician-views?view=my_unsolved", "my_unsolved", None, "all", 1, 20),
    ("views bu=3 p5 x50", "/v1/requests/technician-views?view=all_unsolved&business_unit_id=3&page=5&per_page=50",
     "all_unsolved", 3, "all", 5, 50),
    ("counts", "/v1/requests/technician-views/counts", "unassigned", None, "all", 1, 20),
)


def sql_timing(url: str, techs: list[str], runs: int) -> dict[str, tuple[list[float], list[float]]]:
    """Sequential timings of each side's queries alone (psycopg, as each server's pool sets up)."""
    out: dict[str, tuple[list[float], list[float]]] = {}

    async def go() -> None:
        connect = psycopg.AsyncConnection.connect
        async with await connect(url, autocommit=True, options="-c TimeZone=UTC") as proj, \
                await connect(url, autocommit=True, options=PG_OPTIONS) as base:
            for label, _, view, bu, kind, page, per_page in CASES:
                counts_only = label == "counts"
                p, b = [], []
                for i in range(runs):
                    tech, now = techs[i % len(techs)], datetime.now(UTC)
                    t0 = time.perf_counter()
                    await technician_views(proj, tech, bu, now, None if counts_only else (view, kind, (page - 1) * per_page, per_page))
                    t1 = time.perf_counter()
                    await baseline_query(base, tech, view, bu, kind, page, per_page, now, not counts_only)
                    p.append((t1 - t0) * 1000)
                    b.append((time.perf_counter() - t1) * 1000)
                out[label] = (sorted(p), sorted(b))

    asyncio.run(go())
    return out


async def _minute_room(seconds: float) -> None:
    """Wait, if needed, until the current UTC minute has ``seconds`` left: ETags carry the minute
    (the time windows move with the clock), so a 304 phase must not straddle a minute boundary."""
    now = datetime.now(UTC)
    left = 60 - now.second - now.microsecond / 1e6
    if left < seconds:
        say(f"  waiting {left:.1f}s for a fresh minute (ETags carry the minute)")
        await asyncio.sleep(left + 0.05)


async def measure(args: argparse.Namespace, api_url: str, base_url: str, techs: list[str]) -> dict:
    viewers = techs[: args.viewers]
    auth = [{"authorization": f"Bearer {make_token(args.jwt_secret, t, ['technician'])}"} for t in viewers]
    results: dict = {"mismatches": []}
    kw = dict(concurrency=args.concurrency, duration=args.duration, warmup=args.warmup)
    async with httpx.AsyncClient(timeout=120) as client:
        for label, path, *_ in CASES:
            for tech, h in zip(viewers, auth):
                for _ in range(3):  # the windows move with the clock: retry a rare boundary crossing
                    a, b = await client.get(api_url + path, headers=h), await client.get(base_url + path, headers=h)
                    if a.status_code == b.status_code == 200 and a.content == b.content:
                        break
                else:
                    results["mismatches"].append((label, tech))
                    say(f"MISMATCH {label} {tech}: {a.status_code} {b.status_code}\n projection {a.text[:600]}\n baseline   {b.text[:600]}")
            say(f"{label}: bodies compared for {len(auth)} technicians ({len(a.content)} bytes)")
            for key, name, url, expect in (
                ("proj", "projection 200", api_url, 200),
                ("p304", "projection 304", api_url, 304),
                ("base", "compute-on-read 200", base_url, 200),
            ):
                headers = auth
                if key == "p304":
                    await _minute_room(args.warmup + args.duration + 2)
                    headers = [{**h, "if-none-match": (await client.get(url + path, headers=h)).headers["etag"]} for h in auth]
                say(f"load: {label} {name}, {args.concurrency} concurrent, {args.warmup:g}+{args.duration:g}s")
                r = await hammer(f"{label}: {name}", url, path, headers, expect=expect, **kw)
                say("  " + r.line())
                results[(label, key)] = r
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["baseline"]:
        return _serve_baseline(argv[1:])
    p = argparse.ArgumentParser(prog="python -m bench.requests_views", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=300_000, help="requests generated (default 300k)")
    p.add_argument("--technicians", type=int, default=40)
    p.add_argument("--viewers", type=int, default=8, help="technicians whose tokens the load cycles through")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per phase (default 8)")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--workers", type=int, default=1, help="uvicorn workers for each server (default 1)")
    p.add_argument("--sql-runs", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the database")
    args = p.parse_args(argv)
    use_uvloop()
    with bench_database(args.keep) as url:
        settings = bench_settings(url)
        args.jwt_secret = settings.jwt_secret
        techs = generate(url, args)
        with psycopg.connect(url) as conn:
            sizes = dict(conn.execute("SELECT view, sum(n) FROM request_counts WHERE scope = '*' AND technician_id = '' GROUP BY 1"))
        sql = sql_timing(url, techs, args.sql_runs)
        with server("api", ["readside.cli", "api", "--workers", str(args.workers)], settings) as api, \
                server("baseline", ["bench.requests_views", "baseline", "--workers", str(args.workers)], settings) as base:
            res = asyncio.run(measure(args, api.base_url, base.base_url, techs))
    rows = [("path", "req/s", "p50 ms", "p99 ms", "server p50 ms", "requests", "errors")]
    for label, *_ in CASES:
        for key in ("proj", "p304", "base"):
            r = res[(label, key)]
            rows.append((r.label, f"{r.rps:.1f}", f"{r.p(0.5):.2f}", f"{r.p(0.99):.2f}", f"{r.srv(0.5):.2f}",
                         str(len(r.latencies)), str(r.errors)))
    for label, *_ in CASES:
        proj_sql, base_sql = sql[label]
        rows.append((f"SQL only {label}: projection", "", f"{pct(proj_sql, 0.5):.2f}", f"{pct(proj_sql, 0.99):.2f}", "", str(len(proj_sql)), ""))
        rows.append((f"SQL only {label}: compute-on-read", "", f"{pct(base_sql, 0.5):.2f}", f"{pct(base_sql, 0.99):.2f}", "", str(len(base_sql)), ""))
    print()
    print(table(f"technician views — {args.requests:,} requests ({sizes.get('all_unsolved', 0):,} unsolved, "
                f"{sizes.get('unassigned', 0):,} unassigned), {args.generated:,} messages, {args.technicians} technicians; "
                f"{args.concurrency} concurrent, {args.workers} worker(s), {args.duration:g}s per phase", rows))
    print()
    for label, *_ in CASES:
        proj, p304, b = res[(label, "proj")], res[(label, "p304")], res[(label, "base")]
        proj_sql, base_sql = sql[label]
        print(f"{label}: projection {proj.rps:.0f} req/s p50 {proj.p(0.5):.1f} ms p99 {proj.p(0.99):.1f} ms"
              f" | compute-on-read {b.rps:.0f} req/s p50 {b.p(0.5):.1f} ms p99 {b.p(0.99):.1f} ms"
              f" | ratio {proj.rps / b.rps if b.rps else float('inf'):.1f}x req/s"
              f" | 304 path {p304.rps:.0f} req/s"
              f" | SQL alone p50 {pct(proj_sql, 0.5):.2f} vs {pct(base_sql, 0.5):.2f} ms")
    failed = False
    for key, r in res.items():
        if key != "mismatches" and (r.errors or len(r.latencies) < 20):
            print(f"{r.label}: {r.errors} errors ({r.first_error}), {len(r.latencies)} measured")
    if res["mismatches"]:
        print(f"WARNING: bodies differ for {res['mismatches']}")
        failed = True
    return 1 if failed else 0


def _serve_baseline(argv: list[str]) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.requests_views baseline")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    # The same server options as ``readside api`` (readside.cli.cmd_api).
    uvicorn.run("bench.requests_views:baseline_from_env", factory=True, host="127.0.0.1", port=args.port,
                workers=args.workers, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
