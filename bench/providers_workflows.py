"""GET /v1/providers?sort=most_booked and GET /v1/workflows: the read models versus compute-on-read.

Fills one database straight with COPY (no broker), both sides from the same generated world:

- providers: ``--providers`` profiles in nine categories, ``--bookings`` bookings (skewed: a few
  popular providers, a long tail) and ``--reviews`` reviews. The baseline keeps them normalized
  (``base_providers``, ``base_bookings``, ``base_reviews``) and counts bookings per request (join +
  GROUP BY + sort + LIMIT, reviews aggregated the same way, total by window count). The projection
  side holds the precomputed cards (``providers`` rows rendered by
  ``readside.readmodels.providers.fold.render``) plus ``provider_counts`` and ``listing_versions``.
- workflows: ``--viewers`` heavy owners with ``--workflows-per-viewer`` workflows each (plus
  other owners'), 1..8 saved versions each with real-sized graphs (2..24 nodes, 2% of workflows
  1500..3000 nodes). The baseline stores every version's ``nodes``/``edges`` as jsonb and, per
  request, picks each workflow's latest version and counts its arrays (``jsonb_array_length``);
  the projection holds one summary row per workflow (``render`` of ``WorkflowState``).

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
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from bench._common import baseline_starlette, bench_database, bench_settings, hammer, say, server, table, use_uvloop
from readside.api.auth import make_token
from readside.api.http import PRIVATE, PUBLIC, Context, Timing, json_response
from readside.api.params import Query
from readside.readmodels.providers.fold import Profile, ProviderState, normalize_category, render
from readside.readmodels.providers.store import PROJECTION as PROVIDERS
from readside.readmodels.workflows.fold import Created, Latest, WorkflowState
from readside.readmodels.workflows.fold import render as render_workflow
from readside.readmodels.workflows.store import PROJECTION as WORKFLOWS
from readside.shared.db import migrate
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


def generate_providers(url: str, args: argparse.Namespace) -> None:
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
    with psycopg.connect(url, autocommit=True) as c1, psycopg.connect(url, autocommit=True) as c2, \
            psycopg.connect(url, autocommit=True) as c3, psycopg.connect(url, autocommit=True) as c4, \
            contextlib.ExitStack() as stack:
        base_p = stack.enter_context(c1.cursor().copy(
            "COPY base_providers (provider_id, business_name, avatar_url, category, category_key, location, "
            "hourly_rate_cents, price_visible, custom_subtitle, status, created_at, updated_at) FROM STDIN"))
        base_b = stack.enter_context(c2.cursor().copy("COPY base_bookings (provider_id, booking_id, confirmed_at) FROM STDIN"))
        base_r = stack.enter_context(c3.cursor().copy("COPY base_reviews (provider_id, review_id, rating, posted_at) FROM STDIN"))
        proj = stack.enter_context(c4.cursor().copy(
            "COPY providers (provider_id, business_name, avatar_url, category, location, hourly_rate_cents, "
            "price_visible, custom_subtitle, status, updated_at, created_at, book_count, rating_sum, rating_count, "
            "listed, category_key, booked_key, newest_key, rated_key, rated_count_key, item) FROM STDIN"))
        for i, pid in enumerate(pids):
            category = rng.choices(CATEGORIES, weights=WEIGHTS)[0]
            created = rng.uniform(0, SPAN_S * 0.5)
            updated = created + rng.uniform(0, SPAN_S * 0.5)
            prof = Profile(
                business_name=None if rng.random() < 0.05 else f"{category} by {pid}",
                avatar_url=None if rng.random() < 0.3 else f"https://cdn.example/avatars/{pid}.jpg",
                category=category, location=rng.choice(("Cape Town", "Johannesburg", "Durban", None)),
                hourly_rate_cents=rng.randrange(30_000, 400_000, 500), price_visible=rng.random() < 0.8,
                custom_subtitle=None if rng.random() < 0.6 else f"{rng.randint(2, 20)} years of experience",
                status=rng.choices(("active", "inactive", "suspended"), weights=(90, 7, 3))[0], updated_at=at(updated),
            )
            state = ProviderState(pid, prof, at(created), books[i], sum(reviews[i]), len(reviews[i]))
            card = render(state)
            assert card is not None
            base_p.write_row((pid, prof.business_name, prof.avatar_url, prof.category, card.category_key, prof.location,
                              prof.hourly_rate_cents, prof.price_visible, prof.custom_subtitle, prof.status,
                              at(created), at(updated)))
            for k in range(books[i]):
                base_b.write_row((pid, f"b-{i}-{k}", at(created + rng.uniform(0, SPAN_S))))
            for k, rating in enumerate(reviews[i]):
                base_r.write_row((pid, f"r-{i}-{k}", rating, at(created + rng.uniform(0, SPAN_S))))
            proj.write_row((pid, prof.business_name, prof.avatar_url, prof.category, prof.location, prof.hourly_rate_cents,
                            prof.price_visible, prof.custom_subtitle, prof.status, prof.updated_at, state.created_at,
                            state.book_count, state.rating_sum, state.rating_count, card.listed, card.category_key,
                            card.booked_key, card.newest_key, card.rated_key, card.rated_count_key, dumps(card.item)))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO provider_counts (key, listed) SELECT 'providers:' || category_key, count(*) FROM providers "
            "WHERE listed GROUP BY category_key UNION ALL SELECT 'providers', count(*) FROM providers WHERE listed")
        conn.execute("INSERT INTO listing_versions (key, version) SELECT key, 1 FROM provider_counts")


def _graph(rng: random.Random, size: int) -> tuple[bytes, bytes]:
    nodes = [{"id": f"n{i}", "type": "trigger" if i == 0 else rng.choice(NODE_TYPES), "label": f"Step {i}",
              "position": {"x": 240 * (i % 6), "y": 160 * (i // 6)},
              "config": {"retries": rng.randint(0, 3), "timeout_s": rng.choice((30, 60, 300))}} for i in range(size)]
    edges = [{"id": f"e{i}", "source": f"n{rng.randrange(i)}", "target": f"n{i}"} for i in range(1, size)]
    return dumps(nodes), dumps(edges)


def generate_workflows(url: str, args: argparse.Namespace) -> list[str]:
    """Fill both sides; return the heavy viewers."""
    rng = random.Random(args.seed + 1)
    heavy = [f"u-{i + 1}" for i in range(args.viewers)]
    owners = heavy * args.workflows_per_viewer + [f"u-{args.viewers + 1 + rng.randrange(200)}"
                                                  for _ in range(args.other_workflows)]
    versions = 0
    with psycopg.connect(url, autocommit=True) as c1, psycopg.connect(url, autocommit=True) as c2, \
            psycopg.connect(url, autocommit=True) as c3, contextlib.ExitStack() as stack:
        base_w = stack.enter_context(c1.cursor().copy(
            "COPY base_workflows (workflow_id, owner_id, name, is_template, created_at, deleted) FROM STDIN"))
        base_v = stack.enter_context(c2.cursor().copy(
            "COPY base_versions (workflow_id, version_number, nodes, edges, saved_at) FROM STDIN"))
        proj = stack.enter_context(c3.cursor().copy(
            "COPY workflows (workflow_id, owner_id, name, is_template, created_at, latest_version, latest_saved_at, "
            "node_count, edge_count, last_saved_at, deleted, listed, updated_at, item) FROM STDIN"))
        for n, owner in enumerate(owners):
            wid = f"w-{n:07d}"
            created = rng.uniform(0, SPAN_S)
            c = Created(at(created), owner, f"Workflow {n}", rng.random() < 0.1)
            gone = rng.random() < 0.05
            size = rng.randint(1500, 3000) if rng.random() < 0.02 else rng.randint(2, 20)
            state = WorkflowState(wid, c, None, None, gone)
            base_w.write_row((wid, owner, c.name, c.is_template, c.created_at, gone))
            t = created
            for v in range(1, rng.randint(1, 8) + 1):
                t += rng.uniform(60, 3 * 86_400)
                size += rng.randint(0, 4)
                nodes, edges = _graph(rng, size)
                base_v.write_row((wid, v, nodes.decode(), edges.decode(), at(t)))
                state.latest = Latest(v, at(t), size, size - 1)
                state.last_saved_at = at(t)
                versions += 1
            row = render_workflow(state)
            assert row is not None
            lv = state.latest
            proj.write_row((wid, owner, c.name, c.is_template, c.created_at, lv.version_number if lv else None,
                            lv.saved_at if lv else None, lv.node_count if lv else None, lv.edge_count if lv else None,
                            state.last_saved_at, gone, row.listed, row.updated_at, dumps(row.item)))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO workflow_list_versions (key, version) "
                     "SELECT DISTINCT 'workflows:' || owner_id, 1 FROM workflows UNION SELECT 'templates', 1")
    args.generated_workflows = (len(owners), versions)
    return heavy


def generate(url: str, args: argparse.Namespace) -> list[str]:
    began = time.perf_counter()
    migrate(url, [PROVIDERS, WORKFLOWS])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BASELINE_DDL)
    generate_providers(url, args)
    say(f"providers: {args.providers:,} with {args.bookings:,} bookings, {args.reviews:,} reviews "
        f"({time.perf_counter() - began:.1f}s)")
    heavy = generate_workflows(url, args)
    say(f"workflows: {args.generated_workflows[0]:,} with {args.generated_workflows[1]:,} versions "
        f"({time.perf_counter() - began:.1f}s); indexing")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BASELINE_INDEXES)
        conn.execute("VACUUM ANALYZE")
        (size,) = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('base_versions'))").fetchone()
    say(f"data ready in {time.perf_counter() - began:.1f}s; base_versions is {size}")
    return heavy


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
