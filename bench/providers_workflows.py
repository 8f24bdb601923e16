"""GET /v1/providers?sort=most_booked and GET /v1/workflows: the read models versus compute-on-read.

Fills one database (no broker), both sides from the same generated world: the baseline's normalized
tables with COPY, the read models from the same world as contract events written by their own
``apply`` (``bench._events.feed``):

- providers: ``--providers`` profiles in nine categories, ``--bookings`` bookings (skewed: a few
  popular providers, a long tail) and ``--reviews`` reviews. The baseline keeps them normalized
  (``base_providers``, ``base_bookings``, ``base_reviews``) and counts bookings per request (join +
  GROUP BY + sort + LIMIT, reviews aggregated the same way, total by window count). The projection
  side holds the precomputed cards (``providers`` rows) plus ``provider_counts`` and
  ``listing_versions``, as the read model writes them.
- workflows: ``--viewers`` heavy owners with ``--workflows-per-viewer`` workflows each (plus
  other owners'), 1..8 saved versions each with real-sized graphs (2..24 nodes, 2% of workflows
  1500..3000 nodes). The baseline stores every version's ``nodes``/``edges`` as jsonb and, per
  request, picks each workflow's latest version and counts its arrays (``jsonb_array_length``);
  the projection holds one summary row per workflow.

Then through real HTTP with the bench client (``bench._common.hammer``), for each path: the real
API (``python -m readside.cli api``) and the baseline served by the same stack (Starlette, uvicorn,
auth, parameter parsing, pool, ready bytes) from this module (``--serve-baseline``). Both answers
are compared byte for byte before timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import random
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from bench._common import baseline_starlette, bench_database, bench_settings, hammer, say, server, table, use_uvloop
from bench._events import event, feed
from readside.api.auth import make_token
from readside.api.http import PRIVATE, PUBLIC, Context, Timing, json_response
from readside.api.params import Query
from readside.readmodels.providers.fold import Profile, ProviderState, normalize_category, render
from readside.schemas import Event
from readside.shared.jsonbytes import dumps, rfc3339
from readside.shared.settings import Settings

EPOCH = datetime(2026, 6, 1, 8, tzinfo=UTC)
SPAN_S = 150 * 24 * 3600
CATEGORIES = ("DJ", "Sound Service", "Photographer", "Live Band", "MC", "Videographer", "Caterer", "Lighting",
              "Event Planner")
WEIGHTS = (25, 15, 20, 12, 8, 8, 5, 4, 3)
NODE_TYPES = ("trigger", "action", "condition", "delay", "webhook", "email")
PG_OPTIONS = "-c TimeZone=UTC -c plan_cache_mode=force_custom_plan"

BASELINE_DDL = """
CREATE TABLE base_providers (
    provider_id text COLLATE "C" PRIMARY KEY, business_name text, avatar_url text, category text NOT NULL,
    category_key text COLLATE "C" NOT NULL, location text, hourly_rate_cents int8, price_visible bool NOT NULL,
    custom_subtitle text, status text NOT NULL, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL);
CREATE TABLE base_bookings (provider_id text COLLATE "C" NOT NULL, booking_id text COLLATE "C" NOT NULL,
    confirmed_at timestamptz NOT NULL);
CREATE TABLE base_reviews (provider_id text COLLATE "C" NOT NULL, review_id text COLLATE "C" NOT NULL,
    rating int4 NOT NULL, posted_at timestamptz NOT NULL);
CREATE TABLE base_workflows (workflow_id text COLLATE "C" PRIMARY KEY, owner_id text COLLATE "C" NOT NULL,
    name text NOT NULL, is_template bool NOT NULL, created_at timestamptz NOT NULL, deleted bool NOT NULL);
CREATE TABLE base_versions (workflow_id text COLLATE "C" NOT NULL, version_number int4 NOT NULL,
    nodes jsonb NOT NULL, edges jsonb NOT NULL, saved_at timestamptz NOT NULL);
"""
# The baseline's best indexes, built after the bulk load.
BASELINE_INDEXES = """
ALTER TABLE base_bookings ADD PRIMARY KEY (provider_id, booking_id);
ALTER TABLE base_reviews ADD PRIMARY KEY (provider_id, review_id);
CREATE INDEX base_providers_listed ON base_providers (category_key, provider_id) WHERE status = 'active';
ALTER TABLE base_versions ADD PRIMARY KEY (workflow_id, version_number);
CREATE INDEX base_workflows_owner ON base_workflows (owner_id) WHERE NOT deleted;
"""

PROVIDERS_SQL = """
SELECT p.provider_id, p.business_name, p.avatar_url, p.category, p.location, p.hourly_rate_cents, p.price_visible,
       p.custom_subtitle, p.status, p.updated_at, p.created_at,
       coalesce(b.n, 0) AS book_count, coalesce(r.total, 0), coalesce(r.n, 0), count(*) OVER () AS listed
FROM base_providers p
LEFT JOIN (SELECT b.provider_id, count(*) AS n FROM base_bookings b GROUP BY b.provider_id) b USING (provider_id)
LEFT JOIN (SELECT r.provider_id, sum(r.rating) AS total, count(*) AS n FROM base_reviews r GROUP BY r.provider_id) r
    USING (provider_id)
WHERE p.status = 'active' {category}
ORDER BY book_count DESC, p.provider_id
LIMIT %(n)s
"""

WORKFLOWS_SQL = """
WITH mine AS (
    SELECT * FROM base_workflows WHERE owner_id = %(u)s AND NOT deleted
), latest AS (
    SELECT DISTINCT ON (v.workflow_id) v.workflow_id, v.version_number,
           jsonb_array_length(v.nodes) AS node_count, jsonb_array_length(v.edges) AS edge_count
    FROM mine JOIN base_versions v USING (workflow_id)
    ORDER BY v.workflow_id, v.version_number DESC
), saved AS (
    SELECT v.workflow_id, max(v.saved_at) AS last_saved FROM mine JOIN base_versions v USING (workflow_id) GROUP BY 1
)
SELECT m.workflow_id, m.name, l.version_number, coalesce(l.node_count, 0), coalesce(l.edge_count, 0), m.is_template,
       m.created_at, coalesce(s.last_saved, m.created_at) AS updated_at
FROM mine m LEFT JOIN latest l USING (workflow_id) LEFT JOIN saved s USING (workflow_id)
ORDER BY updated_at DESC, m.workflow_id DESC
LIMIT %(n)s
"""


# -- the baseline server ---------------------------------------------------------------------------

def _etag(body: bytes) -> str:
    # No version to build an ETag from: only a hash of the body, i.e. after the whole query.
    return 'W/"b' + hashlib.blake2b(body, digest_size=8).hexdigest() + '"'


async def baseline_providers(request: Request, ctx: Context, timing: Timing) -> Response:
    q = Query(request, frozenset({"category", "sort", "limit"}))
    raw = q.text("category")
    category = normalize_category(raw) if raw is not None else None
    sort = q.choice("sort", ("most_booked",), "most_booked")
    limit = q.integer("limit", 12, 1, 50)
    sql = PROVIDERS_SQL.format(category="AND p.category_key = %(c)s" if category is not None else "")
    async with timing.connection(ctx.pool) as conn:
        rows = await (await conn.execute(sql, {"c": category, "n": limit + 1})).fetchall()
    total = rows[0][-1] if rows else 0
    cards = []
    for pid, *prof, created_at, books, rsum, rcount, _ in rows:
        cards.append(render(ProviderState(pid, Profile(*prof), created_at, books, rsum, rcount)))
    next_cursor = None
    if len(cards) > limit:
        cards = cards[:limit]
        bound = "\x1f".join(("providers", "all" if category is None else "c:" + category, str(sort), str(limit), "*"))
        next_cursor = ctx.cursors.encode(bound, [cards[-1].booked_key, cards[-1].provider_id])
    body = dumps({"items": [c.item for c in cards], "next_cursor": next_cursor, "total": total})
    return json_response(body, _etag(body), PUBLIC, vary=False)


async def baseline_workflows(request: Request, ctx: Context, timing: Timing) -> Response:
    viewer = ctx.auth(request)
    q = Query(request, frozenset({"limit"}))
    limit = q.integer("limit", 20, 1, 100)
    async with timing.connection(ctx.pool) as conn:
        rows = await (await conn.execute(WORKFLOWS_SQL, {"u": viewer.sub, "n": limit + 1})).fetchall()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = ctx.cursors.encode(f"workflows\x1f{viewer.sub}\x1f{limit}", [rfc3339(rows[-1][-1]), rows[-1][0]])
    items = [
        {"id": wid, "name": name, "latest_version": number, "node_count": nodes, "edge_count": edges,
         "is_template": template, "created_at": created_at, "updated_at": updated_at}
        for wid, name, number, nodes, edges, template, created_at, updated_at in rows
    ]
    body = dumps({"items": items, "next_cursor": next_cursor})
    return json_response(body, _etag(body), PRIVATE)


def baseline_app(settings: Settings) -> Starlette:
    return baseline_starlette(settings, {"/v1/providers": baseline_providers, "/v1/workflows": baseline_workflows},
                              PG_OPTIONS)


def baseline_app_from_env() -> Starlette:
    return baseline_app(Settings.from_env())


# -- data ------------------------------------------------------------------------------------------

def at(seconds: float) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


def generate_providers(args: argparse.Namespace, base: list) -> Iterator[Event]:
    """The providers' events; their normalized rows go to the baseline's COPYs ``base``."""
    base_p, base_b, base_r = base
    rng = random.Random(args.seed)
    n = args.providers
    # Zipf-like popularity: a few providers take most bookings and reviews.
    weights = [1 / (i + 1) ** 0.9 for i in range(n)]
    rng.shuffle(weights)
    pids = [f"p-{i:06d}" for i in range(n)]
    books = [0] * n
    for i in rng.choices(range(n), weights=weights, k=args.bookings):
        books[i] += 1
    reviews: list[list[int]] = [[] for _ in range(n)]
    for i in rng.choices(range(n), weights=weights, k=args.reviews):
        reviews[i].append(rng.choices((1, 2, 3, 4, 5), weights=(3, 4, 10, 30, 53))[0])
    for i, pid in enumerate(pids):
        category = rng.choices(CATEGORIES, weights=WEIGHTS)[0]
        created = rng.uniform(0, SPAN_S * 0.5)
        updated = created + rng.uniform(0, SPAN_S * 0.5)
        prof = {
            "provider_id": pid, "business_name": None if rng.random() < 0.05 else f"{category} by {pid}",
            "avatar_url": None if rng.random() < 0.3 else f"https://cdn.example/avatars/{pid}.jpg",
            "category": category, "location": rng.choice(("Cape Town", "Johannesburg", "Durban", None)),
            "hourly_rate_cents": rng.randrange(30_000, 400_000, 500), "price_visible": rng.random() < 0.8,
            "custom_subtitle": None if rng.random() < 0.6 else f"{rng.randint(2, 20)} years of experience",
            "status": rng.choices(("active", "inactive", "suspended"), weights=(90, 7, 3))[0],
        }
        # the first snapshot dates the listing (created_at), the latest one holds
        yield event("provider.profile_updated", {**prof, "updated_at": at(created)}, at(created))
        yield event("provider.profile_updated", {**prof, "updated_at": at(updated)}, at(updated))
        base_p.write_row((pid, prof["business_name"], prof["avatar_url"], category, normalize_category(category),
                          prof["location"], prof["hourly_rate_cents"], prof["price_visible"], prof["custom_subtitle"],
                          prof["status"], at(created), at(updated)))
        for k in range(books[i]):
            when = at(created + rng.uniform(0, SPAN_S))
            yield event("booking.confirmed", {"provider_id": pid, "booking_id": f"b-{i}-{k}", "confirmed_at": when}, when)
            base_b.write_row((pid, f"b-{i}-{k}", when))
        for k, rating in enumerate(reviews[i]):
            when = at(created + rng.uniform(0, SPAN_S))
            yield event("review.posted", {"provider_id": pid, "review_id": f"r-{i}-{k}", "rating": rating,
                                          "posted_at": when}, when)
            base_r.write_row((pid, f"r-{i}-{k}", rating, when))


def _graph(rng: random.Random, size: int) -> tuple[list, list]:
    bits = [rng.getrandbits(32) for _ in range(size)]  # one draw per node: the big graphs are many nodes
    nodes = [{"id": f"n{i}", "type": "trigger" if i == 0 else NODE_TYPES[b % 6], "label": f"Step {i}",
              "position": {"x": 240 * (i % 6), "y": 160 * (i // 6)},
              "config": {"retries": (b >> 3) % 4, "timeout_s": (30, 60, 300)[(b >> 5) % 3]}} for i, b in enumerate(bits)]
    edges = [{"id": f"e{i}", "source": f"n{(bits[i] >> 8) % i}", "target": f"n{i}"} for i in range(1, size)]
    return nodes, edges


def generate_workflows(args: argparse.Namespace, base: list, made: list[int]) -> Iterator[Event]:
    """The workflows' events; their normalized rows go to the baseline's COPYs ``base``."""
    base_w, base_v = base
    rng = random.Random(args.seed + 1)
    heavy = [f"u-{i + 1}" for i in range(args.viewers)]
    owners = heavy * args.workflows_per_viewer + [f"u-{args.viewers + 1 + rng.randrange(200)}"
                                                  for _ in range(args.other_workflows)]
    for n, owner in enumerate(owners):
        wid = f"w-{n:07d}"
        created = rng.uniform(0, SPAN_S)
        name, template = f"Workflow {n}", rng.random() < 0.1
        gone = rng.random() < 0.05
        size = rng.randint(1500, 3000) if rng.random() < 0.02 else rng.randint(2, 20)
        yield event("workflow.created", {"workflow_id": wid, "owner_id": owner, "name": name, "is_template": template,
                                         "created_at": at(created)}, at(created))
        base_w.write_row((wid, owner, name, template, at(created), gone))
        t = created
        for v in range(1, rng.randint(1, 8) + 1):
            t += rng.uniform(60, 3 * 86_400)
            size += rng.randint(0, 4)
            nodes, edges = _graph(rng, size)
            yield event("workflow.version_saved", {"workflow_id": wid, "version_number": v, "nodes": nodes,
                                                   "edges": edges, "saved_at": at(t)}, at(t))
            base_v.write_row((wid, v, dumps(nodes).decode(), dumps(edges).decode(), at(t)))
            made[1] += 1
        if gone:
            yield event("workflow.deleted", {"workflow_id": wid, "deleted_at": at(t + 60)}, at(t + 60))
        made[0] += 1


# the baseline's own normalized tables (BASELINE_DDL), in the order the generators take them
BASELINE_COPIES = (
    "base_providers (provider_id, business_name, avatar_url, category, category_key, location, hourly_rate_cents, "
    "price_visible, custom_subtitle, status, created_at, updated_at)",
    "base_bookings (provider_id, booking_id, confirmed_at)",
    "base_reviews (provider_id, review_id, rating, posted_at)",
    "base_workflows (workflow_id, owner_id, name, is_template, created_at, deleted)",
    "base_versions (workflow_id, version_number, nodes, edges, saved_at)",
)


def generate(url: str, args: argparse.Namespace) -> list[str]:
    """Fill both sides from one generated world; return the heavy workflow owners."""
    began, made = time.perf_counter(), [0, 0]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BASELINE_DDL)
    conns = [psycopg.connect(url, autocommit=True) for _ in BASELINE_COPIES]
    try:
        with contextlib.ExitStack() as stack:
            cp = [stack.enter_context(c.cursor().copy(f"COPY {t} FROM STDIN")) for c, t in zip(conns, BASELINE_COPIES)]
            count = feed(url, ["providers"], generate_providers(args, cp[:3]), batch=20_000)
            say(f"providers: {args.providers:,} with {args.bookings:,} bookings, {args.reviews:,} reviews "
                f"({count:,} events, {time.perf_counter() - began:.1f}s)")
            count = feed(url, ["workflows"], generate_workflows(args, cp[3:], made), batch=2_000,
                         note=lambda: f"{made[0]:,} workflows, {made[1]:,} versions")
    finally:
        for c in conns:
            c.close()
    args.generated_workflows = tuple(made)
    say(f"workflows: {made[0]:,} with {made[1]:,} versions ({count:,} events, {time.perf_counter() - began:.1f}s); "
        "indexing the baseline")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BASELINE_INDEXES)
        conn.execute("VACUUM ANALYZE")
        (size,) = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('base_versions'))").fetchone()
    say(f"data ready in {time.perf_counter() - began:.1f}s; base_versions is {size}")
    return [f"u-{i + 1}" for i in range(args.viewers)]


# -- measuring -------------------------------------------------------------------------------------

async def measure(args: argparse.Namespace, api_url: str, base_url: str, heavy: list[str]) -> list[tuple]:
    auth = [{"authorization": f"Bearer {make_token(args.jwt_secret, u)}"} for u in heavy]
    cases = [
        ("/v1/providers?sort=most_booked", [{}]),
        ("/v1/providers?category=dj&sort=most_booked", [{}]),
        ("/v1/workflows", auth),
    ]
    out = []
    async with httpx.AsyncClient(timeout=120) as client:
        for path, headers in cases:
            for h in headers:
                a, b = await client.get(api_url + path, headers=h), await client.get(base_url + path, headers=h)
                if a.status_code != 200 or a.content != b.content:
                    raise SystemExit(f"MISMATCH on {path}: {a.status_code} {b.status_code}\n"
                                     f" projection {a.text[:600]}\n baseline   {b.text[:600]}")
            say(f"{path}: bodies identical ({len(a.content)} bytes)")
    kw = dict(concurrency=args.concurrency, duration=args.duration, warmup=args.warmup)
    for path, headers in cases:
        results = []
        for label, url in (("read model", api_url), ("compute-on-read", base_url)):
            say(f"load: {path} {label}, {args.concurrency} concurrent, {args.warmup:g}+{args.duration:g}s")
            res = await hammer(f"{label}", url, path, headers, expect=200, **kw)
            say("  " + res.line())
            results.append(res)
        out.append((path, *results))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.providers_workflows", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--providers", type=int, default=5000)
    p.add_argument("--bookings", type=int, default=500_000)
    p.add_argument("--reviews", type=int, default=100_000)
    p.add_argument("--viewers", type=int, default=4, help="heavy workflow owners, the ones queried (default 4)")
    p.add_argument("--workflows-per-viewer", type=int, default=300)
    p.add_argument("--other-workflows", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase (default 10)")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--workers", type=int, default=1, help="uvicorn workers for each server (default 1)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the database")
    p.add_argument("--serve-baseline", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_baseline:
        import uvicorn

        uvicorn.run("bench.providers_workflows:baseline_app_from_env", factory=True, host="127.0.0.1", port=args.port,
                    workers=args.workers, log_level="warning", access_log=False)
        return 0
    use_uvloop()
    with bench_database(args.keep) as url:
        settings = bench_settings(url)
        args.jwt_secret = settings.jwt_secret
        heavy = generate(url, args)
        with server("api", ["readside.cli", "api", "--workers", str(args.workers)], settings) as api, \
                server("baseline", ["bench.providers_workflows", "--serve-baseline", "--workers", str(args.workers)],
                       settings) as base:
            results = asyncio.run(measure(args, api.base_url, base.base_url, heavy))
    rows = [("path", "side", "req/s", "p50 ms", "p99 ms", "server p50 ms", "requests", "errors")]
    for path, proj, b in results:
        for r in (proj, b):
            rows.append((path, r.label, f"{r.rps:.1f}", f"{r.p(0.5):.2f}", f"{r.p(0.99):.2f}", f"{r.srv(0.5):.2f}",
                         str(len(r.latencies)), str(r.errors)))
    workflows, versions = args.generated_workflows
    print()
    print(table(f"{args.providers:,} providers, {args.bookings:,} bookings, {args.reviews:,} reviews; "
                f"{workflows:,} workflows, {versions:,} versions ({args.viewers} viewers x {args.workflows_per_viewer}); "
                f"{args.concurrency} concurrent, {args.workers} worker(s), {args.duration:g}s per phase", rows))
    print()
    for path, proj, b in results:
        print(f"{path}: read model {proj.rps:.0f} req/s p50 {proj.p(0.5):.1f} ms | compute-on-read {b.rps:.0f} req/s "
              f"p50 {b.p(0.5):.1f} ms | {proj.rps / b.rps if b.rps else float('inf'):.1f}x req/s")
    errors = [r for _, *rs in results for r in rs if r.errors]
    for r in errors:
        print(f"{r.label}: {r.errors} errors, first: {r.first_error}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
