"""GET /v1/requests/technician-views (+ /counts): the projection versus compute-on-read, same data.

Generates support-desk requests (no broker) into both sides: the normalized tables a
compute-on-read app would query (``req_base``, ``req_assignees_base``, ``req_messages_base``,
``req_reads_base``, COPY, with the best indexes we could give them) AND, from the very same
requests as contract events, the projection's tables, written by the requests read model's own
``apply`` (``bench._events.feed``: ``requests_rows``, ``request_assignees``, the counters and
versions). Then, through real HTTP with a concurrent client:

- projection: the real API (``python -m readside.cli api``), 200 and the 304 path (If-None-Match);
- baseline: the same Starlette/uvicorn stack (``bench._requests_baseline``) that
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
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg

from bench._common import bench_database, bench_settings, hammer, pct, say, server, table, use_uvloop
from bench._events import event, feed
from bench._requests_baseline import BASELINE_DDL, BASELINE_INDEXES, PG_OPTIONS, baseline_query
from readside.api.auth import make_token
from readside.readmodels.requests.queries import technician_views
from readside.schemas import Event

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
    """One request: its events (as producers send them) and its normalized rows (request,
    assignees, messages, reads) for the baseline."""
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
    events = [event("request.created", {"request_id": rid, "requester_id": requester, "business_unit_id": bu,
                                        "title": title, "priority": priority, "status": "new", "parent_id": parent,
                                        "created_at": created}, created)]
    if status != "new":
        events.append(event("request.updated", {"request_id": rid, "changes": {"status": status}, "updated_at": changed},
                            changed))
    if team:
        events.append(event("request.assigned", {"request_id": rid, "assignee_ids": team, "assigned_at": assigned_at},
                            assigned_at))
    messages = []
    for k in range(rng.choice((0, 1, 1, 2, 2, 3, 4, 5))):
        at = created + (changed - created) * rng.random()
        role = "requester" if rng.random() < 0.5 else "technician"
        messages.append((rid, f"m-{n:08d}-{k}", role, rng.choice(LINES), at))
        events.append(event("request.message_created", {
            "request_id": rid, "message_id": f"m-{n:08d}-{k}", "sender_id": requester if role == "requester" else (team or techs)[0],
            "sender_role": role, "content": messages[-1][3], "created_at": at}, at))
    reads = []
    if messages and rng.random() < 0.7:
        up_to = max(m[4] for m in messages) - (changed - created) * rng.random() * 0.3
        reads.append((rid, "requester", up_to + timedelta(seconds=5), up_to, requester))
    if messages and rng.random() < 0.7:
        for tech in team or techs[:1]:
            up_to = max(m[4] for m in messages) - (changed - created) * rng.random() * 0.3
            reads.append((rid, "technician", up_to + timedelta(seconds=7), up_to, tech))
    for _, role, read_at, up_to, reader in reads:
        events.append(event("request.message_read", {"request_id": rid, "reader_id": reader, "reader_role": role,
                                                     "read_up_to": up_to, "read_at": read_at}, read_at))
    updated = max(t for t in (created, changed, assigned_at, *(m[4] for m in messages)) if t)
    base = (rid, requester, bu, title, priority, status, parent, created, updated, changed if status == "solved" else None)
    return events, base, [(rid, t) for t in team], messages, [r[:4] for r in reads]


# the baseline's own normalized tables (BASELINE_DDL), in the order make_request returns their rows
BASELINE_COPIES = (
    "req_base (request_id, requester_id, business_unit_id, title, priority, status, parent_id, created_at, "
    "updated_at, solved_at)",
    "req_assignees_base (request_id, technician_id)",
    "req_messages_base (request_id, message_id, sender_role, content, created_at)",
    "req_reads_base (request_id, reader_role, read_at, read_up_to)",
)


def generate(url: str, args: argparse.Namespace) -> list[str]:
    """Fill both sides from one generated world; return the technicians' ids."""
    rng = random.Random(args.seed)
    now = datetime.now(UTC)
    techs = [f"tech-{i}" for i in range(1, args.technicians + 1)]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BASELINE_DDL)
    parents: list[str] = []
    began, made = time.perf_counter(), [0, 0]

    def world(cp: list) -> Iterator[Event]:
        for n in range(args.requests):
            events, *rows = make_request(rng, n, now, techs, parents)
            cp[0].write_row(rows[0])
            for copy, some in zip(cp[1:], rows[1:]):
                for row in some:
                    copy.write_row(row)
            made[0], made[1] = n + 1, made[1] + len(rows[2])
            yield from events

    conns = [psycopg.connect(url, autocommit=True) for _ in BASELINE_COPIES]
    try:
        with contextlib.ExitStack() as stack:
            cp = [stack.enter_context(c.cursor().copy(f"COPY {t} FROM STDIN")) for c, t in zip(conns, BASELINE_COPIES)]
            events = feed(url, ["requests"], world(cp), batch=20_000,
                          note=lambda: f"{made[0]:,}/{args.requests:,} requests, {made[1]:,} messages")
    finally:
        for c in conns:
            c.close()
    elapsed = time.perf_counter() - began
    say(f"generated {args.requests:,} requests, {made[1]:,} messages ({events:,} events) in {elapsed:.1f}s "
        f"({args.requests / elapsed:,.0f} requests/s); indexing the baseline")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BASELINE_INDEXES)
        conn.execute("VACUUM ANALYZE")
    say(f"data ready in {time.perf_counter() - began:.1f}s")
    args.generated = made[1]
    return techs


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
                server("baseline", ["bench._requests_baseline", "--workers", str(args.workers)], settings) as base:
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


if __name__ == "__main__":
    sys.exit(main())
