"""Serving a list response: cache, ETag/304, read-your-writes, freshness — one path for all.

    serve(request, ctx, timing, Spec(...)) -> Response

With a cache: one Redis round trip gives the scope's version and the projection's generation
(an MGET when the request has ``If-None-Match``) and, without ``If-None-Match``, the body stored
under them (``Cache.lookup``: one MGET while the scope keeps the versions its previous lookup
found, one GET more after a bump). A matching ``If-None-Match`` is a 304 from the versions alone (after
``Spec.access`` for a scope not every viewer may read: a 304 must not confirm what a 404 hides);
otherwise the body stored under (generation, version, parameters) is a HIT (one more GET after an
ETag that did not match or a generation copied from PostgreSQL), or it is rendered once per burst
(single-flight) and stored — a MISS. A scope Redis holds no version for (never bumped, expired,
evicted) is answered from
PostgreSQL, and its version is created only if PostgreSQL shows the projector wrote the scope:
requests alone never add Redis keys. Without a cache, or while Redis is down or slow, the generation and the version come from
PostgreSQL (one statement: two primary-key lookups) and the body from one statement that reads the
generation too.
ETags are weak and keyed with a server secret, so nobody can forge one for a scope they were
never served.

Generations (``readside rebuild``): a cutover swaps a projection's tables and bumps its
generation, so ETags and cached bodies of the previous tables never match again. The generation
is always read *before* the rows: if it is the new one, the cutover had committed and the rows
come from the new tables; if it is the old one, the response is labelled with a generation that
no later request matches. Without Redis the generation is a column of the statement that reads
the version and the rows (``readside.readmodels.pages.generation``): one statement takes its
locks before its snapshot, so it reads the generation of the very tables it reads. Every response
body comes from ONE statement (never a mix of tables).

Read-your-writes: a request carrying ``X-Readside-After: <topic>:<partition>:<offset>[,...]``
(the position the core app got back when it published) waits — up to ``RYW_TIMEOUT`` — until the
projection that reads that topic has committed past the offset, then answers from PostgreSQL alone
(version, ETag and body), never from the cache.
``X-Readside-Consistency`` says ``caught-up``, ``timeout``, or ``dead-lettered``: caught up, but
an awaited event was dead-lettered instead of applied (its positions in ``X-Readside-Dead-Letters``). The wait is the process's shared
watcher (``api/ryw.py``): one poll for all waiters, positions clamped to the partition's head,
at most ``READSIDE_RYW_MAX_WAITERS`` waiting (one more is answered at once, ``timeout``).

Read replicas (``READSIDE_DATABASE_REPLICA_URLS``, ``api/replicas.py``): the PostgreSQL path —
the version, the ETag and the body, and a read-your-writes request's dead-letter check — may run
on a replica: any usable one for a plain request, for a read-your-writes one only a replica that
has replayed past the commits it waited for. A replica behind the version of the client's
``If-None-Match`` (an ETag we issued) leaves the request to the primary. Everything else stays on
the primary.

Every response says how fresh the projection is: ``X-Readside-Lag: events=<n>; seconds=<s>``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import psycopg
from starlette.requests import Request
from starlette.responses import Response

from readside.api.http import Context, Timing
from readside.api.problems import bad_param
from readside.api.replicas import ReplicaBehind

__all__ = ["RYW_TIMEOUT", "Spec", "etag", "serve"]

RYW_TIMEOUT = 2.0
_NUMBER = re.compile(r"[0-9]{1,19}")
LAG_REFRESH = 1.0


@dataclass(frozen=True)
class Spec:
    projection: str
    version_key: str  # cache scope, bumped by the projector (e.g. ``viewer:u-1``)
    scope: str  # everything the body depends on besides the version
    # Both read the projection's generation in the same statement (``pages.generation``).
    render: Callable[[psycopg.AsyncConnection], Awaitable[tuple[int, int, bytes]]]  # -> (generation, version, body)
    pg_version: Callable[[psycopg.AsyncConnection], Awaitable[tuple[int, int]]]  # -> (generation, version)
    cache_control: str
    vary: bool = True
    cacheable: bool = True
    # Raises the 404 (or 403) of a viewer who may not read the scope; run before a 304 from the
    # cache, which would otherwise answer from the ETag alone (``pg_version`` checks it itself).
    access: Callable[[psycopg.AsyncConnection], Awaitable[object]] | None = None


GENERATION_SQL = "SELECT generation FROM projections WHERE name = %s"


TAGS_MAX = 8192  # ETags kept (_tag)


def etag(ctx: Context, kind: str, generation: int, version: int, scope: str) -> str:
    return _tag(ctx.etag_key, kind, generation, version, scope)


# Kept by all its arguments, the least recently used dropped past TAGS_MAX: a scope's tag is asked
# for by every request until its version moves, and its HMAC was ~4% of a 304's CPU.
@functools.lru_cache(maxsize=TAGS_MAX)
def _tag(key: bytes, kind: str, generation: int, version: int, scope: str) -> str:
    raw = f"{kind}{generation}.{version}\x1f{scope}".encode()
    digest = hmac.new(key, raw, hashlib.blake2b).hexdigest()[:20]
    return f'W/"{kind}{generation}.{version}.{digest}"'


def _matches(request: Request, tag: str) -> bool:
    header = request.headers.get("if-none-match")
    # "*" is not honoured: it would answer 304 without the access check of the scope.
    return header is not None and tag in {t.strip() for t in header.split(",")}


_P_TAG = re.compile(r'W/"p([0-9]{1,19})\.([0-9]{1,19})\.[0-9a-f]{20}"')


def _seen_newer(request: Request, ctx: Context, scope: str, generation: int, version: int) -> bool:
    """Whether ``If-None-Match`` holds an ETag this API issued for ``scope`` at a newer generation
    or version than ``(generation, version)`` (a replica's, behind what the client has seen)."""
    for tag in request.headers.get("if-none-match", "").split(","):
        found = _P_TAG.fullmatch(tag.strip())
        if found and (int(found[1]), int(found[2])) > (generation, version) \
                and etag(ctx, "p", int(found[1]), int(found[2]), scope) == tag.strip():
            return True
    return False


def _headers(spec: Spec, tag: str) -> dict[str, str]:
    headers = {"ETag": tag, "Cache-Control": spec.cache_control}
    if spec.vary:
        headers["Vary"] = "Authorization"
    return headers


async def serve(request: Request, ctx: Context, timing: Timing, spec: Spec) -> Response:
    extra: dict[str, str] = {}  # the headers every answer of _serve carries
    response = await _serve(request, ctx, timing, spec, extra)
    if ctx.metrics is not None:  # readside_cache_hits_total / _misses_total: what X-Cache says
        ctx.metrics.cache_result(spec.projection, extra.get("X-Cache"))
    return response


async def _serve(request: Request, ctx: Context, timing: Timing, spec: Spec, extra: dict[str, str]) -> Response:
    positions = _positions(request, ctx.topics[spec.projection])
    replicas = ctx.replicas
    replica = None  # the replica that answers from PostgreSQL; None: the primary
    if positions:
        caught_up, wal = (False, None) if ctx.ryw is None else await ctx.ryw.wait_wal(spec.projection, positions, RYW_TIMEOUT)
        extra["X-Readside-Consistency"] = "caught-up" if caught_up else "timeout"
        if replicas is not None:
            replica = replicas.replayed_past(wal)
        if caught_up:
            dead = await _dead_lettered(ctx, timing, spec.projection, positions, replica)
            if dead:  # passed, but not applied: the client's write failed validation or its fold
                extra["X-Readside-Consistency"] = "dead-lettered"
                extra["X-Readside-Dead-Letters"] = ",".join(dead)
    extra["X-Readside-Lag"] = await _lag(ctx, timing, spec.projection)
    cache = ctx.cache if spec.cacheable else None
    if cache is not None and positions:
        # Read-your-writes goes to PostgreSQL for the version, the ETag and the body: the Redis
        # version may not be bumped yet for a commit the wait just saw, and a 304 or a shared
        # render under it would be the data from before that commit.
        extra["X-Cache"] = "MISS"
        cache = None
    if cache is not None:
        extra["X-Cache"] = "MISS"
        t0 = time.perf_counter()
        conditional = request.headers.get("if-none-match")
        if conditional:  # a 304 needs no body: the versions alone
            got, body = await cache.versions(spec.version_key, spec.projection), None
        else:  # one round trip: the versions and the body stored under them
            found = await cache.lookup(spec.version_key, spec.projection, spec.scope)
            got, body = (None, None) if found is None else (found[:2], found[2])
        timing.cache += time.perf_counter() - t0
        if got is not None and got[0] is None:
            # Redis holds no version for the scope: PostgreSQL answers, and only if it shows that
            # something wrote the scope is a version created (requests alone never add keys).
            spec, got = _seeding(spec, cache), None
        fetch = bool(conditional)  # the body is still to be read
        if got is not None and got[1] is None:
            got = await _adopt_generation(ctx, timing, cache, spec.projection, got[0])  # type: ignore[arg-type]
            fetch = True
        if got is not None:
            version, generation = got
            tag = etag(ctx, "r", generation, version, spec.scope)  # type: ignore[arg-type]
            if conditional and _matches(request, tag):
                if spec.access is not None:
                    async with timing.connection(ctx.pool) as conn:
                        await spec.access(conn)
                extra["X-Cache"] = "HIT"
                return _not_modified(_headers(spec, tag) | extra)
            key = cache.body_key(spec.version_key, generation, version, spec.scope)  # type: ignore[arg-type]
            if fetch:  # an ETag that no longer matches, or a generation just adopted: now the body
                t0 = time.perf_counter()
                body = await cache.get(key)
                timing.cache += time.perf_counter() - t0
            if body is not None:
                extra["X-Cache"] = "HIT"
                return _ok(body, _headers(spec, tag) | extra)

            async def render() -> bytes:
                async with timing.connection(ctx.pool) as conn:
                    _count(ctx, spec)
                    return (await spec.render(conn))[2]

            body = await cache.single_flight(key, render)
            return _ok(body, _headers(spec, tag) | extra)

    async def from_postgres(conn: psycopg.AsyncConnection, replica: bool = False) -> Response:
        # The generation with the version (and the rows): one statement each (module docstring),
        # both on one server, so the ETag names the version of the rows of the body.
        if request.headers.get("if-none-match"):
            generation, version = await spec.pg_version(conn)
            tag = etag(ctx, "p", generation, version, spec.scope)
            if _matches(request, tag):
                return _not_modified(_headers(spec, tag) | extra)
            if replica and _seen_newer(request, ctx, spec.scope, generation, version):
                raise ReplicaBehind(spec.scope)  # the primary answers (api/replicas.py)
        _count(ctx, spec)
        generation, version, body = await spec.render(conn)
        return _ok(body, _headers(spec, etag(ctx, "p", generation, version, spec.scope)) | extra)

    if replicas is None:
        async with timing.connection(ctx.pool) as conn:
            return await from_postgres(conn)
    return await replicas.read(replica if positions else replicas.for_read(), timing, from_postgres)


async def _generation(cur: psycopg.AsyncCursor) -> int:
    row = await cur.fetchone()
    return row[0] if row else 0


async def _adopt_generation(
    ctx: Context, timing: Timing, cache, projection: str, version: int  # noqa: ANN001
) -> tuple[int, int] | None:
    """Redis has no generation for the projection (new, flushed or evicted): copy PostgreSQL's."""

    async def load() -> int:
        async with timing.connection(ctx.pool) as conn:
            return await _generation(await conn.execute(GENERATION_SQL, (projection,)))

    adopted = await cache.adopt_generation(projection, load)
    return None if adopted is None else (version, adopted)


def _seeding(spec: Spec, cache) -> Spec:  # noqa: ANN001
    """``spec`` whose PostgreSQL lookups seed the scope's cache version once they show the scope
    exists (version > 0: the projector wrote it). A scope nothing wrote stays out of Redis."""

    def seed(version: int) -> None:
        if version > 0:
            cache.seed_soon(spec.version_key)

    async def render(conn: psycopg.AsyncConnection) -> tuple[int, int, bytes]:
        generation, version, body = await spec.render(conn)
        seed(version)
        return generation, version, body

    async def pg_version(conn: psycopg.AsyncConnection) -> tuple[int, int]:
        generation, version = await spec.pg_version(conn)
        seed(version)
        return generation, version

    return replace(spec, render=render, pg_version=pg_version)


def _count(ctx: Context, spec: Spec) -> None:
    if ctx.renders is not None:
        ctx.renders.labels(spec.projection).inc()


class _Ready(Response):
    """A ``Response`` with the raw headers ``Response.__init__`` would build from ``headers``, in the
    same order, without its passes over them (the hot path makes one per request)."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str], tail: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()] + tail


_JSON = (b"content-type", b"application/json")


def _ok(body: bytes, headers: dict[str, str]) -> Response:
    return _Ready(200, body, headers, [(b"content-length", b"%d" % len(body)), _JSON])


def _not_modified(headers: dict[str, str]) -> Response:
    return _Ready(304, b"", headers, [])


# -- read-your-writes ------------------------------------------------------------------------

def _positions(request: Request, topics: frozenset[str]) -> list[tuple[str, int, int]]:
    """The positions named by ``X-Readside-After``, each on one of ``topics`` (the projection's)."""
    raw = request.headers.get("x-readside-after")
    if not raw:
        return []
    usage = "X-Readside-After must be '<topic>:<partition>:<offset>', comma-separated (at most 16)"
    parts = raw.split(",")
    if len(parts) > 16:
        raise bad_param(usage)
    out = []
    for part in parts:
        topic, _, offset = part.strip().rpartition(":")
        topic, _, partition = topic.rpartition(":")
        if not topic or not _NUMBER.fullmatch(partition) or not _NUMBER.fullmatch(offset):
            raise bad_param(usage)
        if int(partition) > 2**31 - 1 or int(offset) > 2**63 - 1:
            raise bad_param(f"{usage}; partition or offset out of range")
        if topic not in topics:
            raise bad_param(f"X-Readside-After names topic {topic[:100]!r}; this endpoint reads {', '.join(sorted(topics))}")
        out.append((topic, int(partition), int(offset)))
    return out


async def _dead_lettered(ctx: Context, timing: Timing, projection: str, positions: list[tuple[str, int, int]],
                         replica: object = None) -> list[str]:
    """The awaited positions the projection dead-lettered instead of applying, as
    ``<topic>:<partition>:<offset>`` (one primary-key lookup each, in one statement); on
    ``replica`` when one answers the request (a dead letter replayed since on the primary may not
    be there yet: the label then matches the rows that replica serves)."""

    async def query(conn: psycopg.AsyncConnection, replica: bool = False) -> list[str]:
        cur = await conn.execute(
            'SELECT d.topic, d.partition, d."offset" FROM dead_letters d '
            "JOIN unnest(%b::text[], %b::int4[], %b::int8[]) AS u(topic, part, off) "
            'ON d.topic = u.topic AND d.partition = u.part AND d."offset" = u.off '
            "WHERE d.projection = %s ORDER BY 1, 2, 3",
            ([t for t, _, _ in positions], [p for _, p, _ in positions], [o for _, _, o in positions], projection),
        )
        return [f"{t}:{p}:{o}" for t, p, o in await cur.fetchall()]

    if ctx.replicas is not None:
        return await ctx.replicas.read(replica, timing, query)
    async with timing.connection(ctx.pool) as conn:
        return await query(conn)


# -- freshness -------------------------------------------------------------------------------

async def _lag(ctx: Context, timing: Timing, projection: str) -> str:
    cached = ctx.lag.get(projection)
    now = time.monotonic()
    if cached and cached[0] > now:
        return cached[1]
    async with timing.connection(ctx.pool) as conn:
        cur = await conn.execute(
            "SELECT coalesce(sum(greatest(h.high_watermark - c.next_offset, 0)), 0), "
            "coalesce(extract(epoch FROM now() - min(c.updated_at) FILTER (WHERE h.high_watermark > c.next_offset)), 0) "
            "FROM checkpoints c JOIN partition_heads h ON h.topic = c.topic AND h.partition = c.partition "
            "WHERE c.projection = %s",
            (projection,),
        )
        events, seconds = await cur.fetchone()  # type: ignore[misc]
    value = f"events={int(events)}; seconds={float(seconds):.1f}"
    ctx.lag[projection] = (now + LAG_REFRESH, value)
    return value
