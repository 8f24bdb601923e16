"""GET /v1/threads/preview?limit=100 through the Redis cache versus straight from PostgreSQL, and
event-to-visible freshness under a steady event stream.

Data: ``bench.api_preview``'s generator (COPY, no broker), smaller by default. Two API processes
serve the same database, side by side:

- ``api+redis`` — ``python -m readside.cli api`` with ``READSIDE_REDIS_URL``: versions and ready
  bodies in Redis (``READSIDE_BENCH_REDIS_URL``, default an embedded Valkey started for the run);
- ``api (no redis)`` — the same command without ``READSIDE_REDIS_URL``: the uncached path every
  request takes when no cache is configured (one indexed lookup per 200, one primary-key lookup
  per 304). It is the baseline of the ratios.

After checking that both return byte-identical bodies (and that the second cached GET is a
HIT), the load client measures, for the heaviest viewers:
(a) cached 200s (X-Cache: HIT), (b) uncached 200s, (c) 304s from Redis with If-None-Match,
(c') 304s from PostgreSQL.

(d) Freshness: a real projector process (``readside projector --only threads``, with Redis, so it
bumps versions and publishes them on ``rs:changed``) consumes a real broker
(``READSIDE_BENCH_KAFKA_BOOTSTRAP``, default an embedded tansu). The watched viewers each get a
few new threads; then ``message.created`` events are published at a steady rate, round robin over
those threads. An event is visible once a read shows its thread's ``meta.message_count``
reaching it. Readers, side by side on the same events:
(d0) one SQL poller on ``thread_previews`` — when the projector's commit made it visible, no HTTP;
(d)  per viewer, one poller per API, polling the preview with If-None-Match every
     ``--poll-interval``;
(e)  per viewer, one ``GET /v1/events`` stream on the cached API, refetching the preview (with its
     ETag) on each ``changed viewer:<sub>`` — push instead of polling.
The figure is publish (just before the producer's send) → the first read that shows it, received,
both on this process's clock. The producer is configured as a product's would be (the settings of
``Publisher.connect``: ``acks="all"``, no linger).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
from aiokafka import AIOKafkaProducer

from bench import api_preview
from bench._common import (
    Connection,
    LoadResult,
    Server,
    bench_database,
    bench_settings,
    hammer,
    kafka,
    pct,
    say,
    server,
    table,
    use_uvloop,
)
from readside.api.auth import make_token
from readside.embedded import EmbeddedValkey
from readside.schemas.publisher import MAX_REQUEST_BYTES
from readside.shared.kafka import create_topics
from readside.shared.settings import Settings

TOPICS = ("threads.events", "payments.events")
CACHED, PLAIN, SSE, SQL = "api+redis", "api (no redis)", "api+redis, SSE", "sql"
MODES = (SQL, PLAIN, CACHED, SSE)
LABELS = {SQL: "(d0) SQL poll of committed rows", PLAIN: "(d) poll api (no redis)", CACHED: "(d) poll api+redis",
          SSE: "(e) SSE push + refetch"}


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """``READSIDE_BENCH_REDIS_URL``, or an embedded Valkey of this run's own (nobody else's keys,
    nobody else's ``rs:changed`` messages)."""
    configured = os.environ.get("READSIDE_BENCH_REDIS_URL")
    if configured:
        yield configured
        return
    valkey = EmbeddedValkey(data_dir=Path(tempfile.mkdtemp(prefix="rs-bench-valkey-")))
    say(f"embedded valkey on {valkey.start()}")
    try:
        yield valkey.url
    finally:
        valkey.stop()


@contextlib.contextmanager
def projector_process(settings: Settings) -> Iterator[Server]:
    """``readside projector --only threads`` as its own process (``Server`` for start/stop only: no HTTP)."""
    proc = Server("projector", [sys.executable, "-m", "readside.cli", "projector", "--only", "threads"], settings, 0)
    say(f"projector started (log {proc.log_path})")
    try:
        yield proc
    finally:
        proc.stop()


def auth(secret: str, viewer: str) -> dict[str, str]:
    return {"authorization": f"Bearer {make_token(secret, viewer, ttl=24 * 3600)}"}


async def renders(url: str) -> float:
    """The cached API's count of bodies rendered from PostgreSQL (``readside_renders_total``)."""
    conn = Connection(url)
    try:
        _, _, body = await conn.get("/metrics", {})
    finally:
        conn.close()
    found = re.search(rb'^readside_renders_total\{projection="threads"\} (\S+)$', body, re.M)
    return float(found.group(1)) if found else 0.0


# -- (a)-(c): serving ----------------------------------------------------------------------------

async def serving(args: argparse.Namespace, cached_url: str, plain_url: str, heavy: list[str]) -> dict:
    path = f"/v1/threads/preview?limit={args.limit}"
    heads = [auth(args.jwt_secret, u) for u in heavy]
    cached_304, plain_304, problems = [], [], []
    c, p = Connection(cached_url), Connection(plain_url)
    try:
        for u, h in zip(heavy, heads):
            s1, h1, b1 = await c.get(path, h)
            s2, h2, b2 = await c.get(path, h)
            s3, h3, b3 = await p.get(path, h)
            if (s1, s2, s3) != (200, 200, 200) or h2.get(b"x-cache") != b"HIT" or not b1 == b2 == b3:
                problems.append(u)
                say(f"MISMATCH for {u}: {s1}/{s2}/{s3} x-cache {h1.get(b'x-cache')}/{h2.get(b'x-cache')}\n"
                    f"  cached {b2[:400]!r}\n  plain  {b3[:400]!r}")
            cached_304.append(h | {"if-none-match": h2[b"etag"].decode()})
            plain_304.append(h | {"if-none-match": h3[b"etag"].decode()})
    finally:
        c.close()
        p.close()
    say(f"bodies byte-identical (cached HIT vs uncached) for {len(heavy) - len(problems)}/{len(heavy)} viewers, "
        f"{len(b3):,} bytes each")
    kw = dict(concurrency=args.concurrency, duration=args.duration, warmup=args.warmup)
    out: dict = {"problems": problems}
    before = await renders(cached_url)
    for key, label, url, headers, expect in (
        ("hit", "(a) cached 200 (HIT)", cached_url, heads, 200),
        ("plain", "(b) uncached 200", plain_url, heads, 200),
        ("r304", "(c) 304 from Redis", cached_url, cached_304, 304),
        ("p304", "(c') 304 from PostgreSQL", plain_url, plain_304, 304),
    ):
        say(f"load: {label}, {args.concurrency} concurrent, {args.warmup:g}+{args.duration:g}s")
        out[key] = await hammer(label, url, path, headers, expect=expect, **kw)
        say("  " + out[key].line())
    out["renders"] = await renders(cached_url) - before  # (a) and (c) must not render anything
    return out


# -- (d): freshness ------------------------------------------------------------------------------

class Clock:
    """Event times: now (UTC), at least ``floor`` (after all generated data, so new threads sort
    first), strictly increasing by the millisecond."""

    def __init__(self, floor: datetime) -> None:
        self.floor_ms = int(floor.timestamp() * 1000)
        self.last = 0

    def next(self) -> str:
        now = max(int(time.time() * 1000), self.floor_ms, self.last + 1)
        self.last = now
        return datetime.fromtimestamp(now / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(type_: str, payload: dict, when: str) -> bytes:
    return orjson.dumps({"event_id": str(uuid.uuid4()), "type": type_, "schema_version": 1,
                         "occurred_at": when, "payload": payload})


@dataclass
class Probe:
    """One watched thread: when each of its messages was published, and first seen per mode."""

    thread_id: str
    viewer: str
    counterparty: str
    published: list[float] = field(default_factory=list)
    seen: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})
    listed: set[str] = field(default_factory=set)

    def mark(self, mode: str, count: int, at: float) -> None:
        self.listed.add(mode)
        seen = self.seen[mode]
        while len(seen) < count:
            seen.append(at)


@dataclass
class PollStats:
    polls: int = 0  # preview GETs
    not_modified: int = 0
    pushed: int = 0  # SSE ``changed`` events received
    server_ms: list[float] = field(default_factory=list)  # Server-Timing total of the 200s
    errors: int = 0
    first_error: str = ""

    def failed(self, what: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or what


class Inbox:
    """A frontend's copy of one viewer's preview: refetched with its ETag, marking the probes it shows."""

    def __init__(self, mode: str, base_url: str, path: str, headers: dict[str, str], probes: dict[str, Probe],
                 stats: PollStats) -> None:
        self.mode, self.path, self.headers, self.probes, self.stats = mode, path, headers, probes, stats
        self.conn, self.etag = Connection(base_url), None

    async def refetch(self) -> None:
        status, head, body = await self.conn.get(self.path, self.headers | ({"if-none-match": self.etag} if self.etag else {}))
        seen_at = time.perf_counter()
        self.stats.polls += 1
        if status == 200:
            self.etag = head[b"etag"].decode()
            total = re.search(rb"total;dur=([0-9.]+)", head.get(b"server-timing", b""))
            if total:
                self.stats.server_ms.append(float(total.group(1)))
            for item in orjson.loads(body)["items"]:
                probe = self.probes.get(item["thread_id"])
                if probe is not None:
                    probe.mark(self.mode, item["meta"]["message_count"], seen_at)
        elif status == 304:
            self.stats.not_modified += 1
        else:
            self.stats.failed(f"{status} {body[:200]!r}")


async def poller(inbox: Inbox, interval: float, stop: asyncio.Event) -> None:
    """Polling: refetch every ``interval`` seconds, until ``stop``."""
    try:
        while not stop.is_set():
            t0 = time.perf_counter()
            await inbox.refetch()
            if (pause := interval - (time.perf_counter() - t0)) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
    finally:
        inbox.conn.close()


async def pushed(inbox: Inbox, base_url: str, viewer: str, stop: asyncio.Event) -> None:
    """Push: hold ``GET /v1/events`` open; refetch on ``ready`` and on each ``changed viewer:<sub>``
    (changes that arrive during a refetch coalesce into one more refetch)."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    wanted = orjson.dumps({"scope": f"viewer:{viewer}"})
    dirty = asyncio.Event()

    async def listen() -> None:
        writer.write((f"GET /v1/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      + "".join(f"{k}: {v}\r\n" for k, v in inbox.headers.items()) + "\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            inbox.stats.failed(head.split(b"\r\n", 1)[0].decode())
            return
        buffer = b""
        while True:  # chunked transfer coding, then "\n\n"-separated events
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                inbox.stats.failed("the event stream ended")
                return
            buffer += (await reader.readexactly(size + 2))[:-2]
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if b"event: ready" in event or b"data: " + wanted in event:
                    inbox.stats.pushed += event.startswith(b"event: changed")
                    dirty.set()

    listening, stopping = asyncio.create_task(listen()), asyncio.create_task(stop.wait())
    try:
        while not stop.is_set() and not listening.done():
            waiting = asyncio.create_task(dirty.wait())
            await asyncio.wait((waiting, listening, stopping), return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if dirty.is_set():
                dirty.clear()
                await inbox.refetch()
    finally:
        for task in (listening, stopping):
            task.cancel()
        await asyncio.gather(listening, stopping, return_exceptions=True)
        writer.close()
        inbox.conn.close()


async def sql_poller(url: str, probes: dict[str, Probe], interval: float, stop: asyncio.Event, stats: PollStats) -> None:
    """No HTTP at all: when the projector's commit makes an event visible in ``thread_previews``."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            t0 = time.perf_counter()
            waiting = [p for p in list(probes.values()) if SQL not in p.listed or len(p.seen[SQL]) < len(p.published)]
            if waiting:
                cur = await conn.execute("SELECT thread_id, item FROM thread_previews WHERE user_id = ANY(%s) "
                                         "AND thread_id = ANY(%s)", (sorted({p.viewer for p in waiting}),
                                                                     [p.thread_id for p in waiting]),
                                         # never prepared: PostgreSQL's generic plan for two arrays
                                         # scans the viewers' whole inboxes (~4 ms each poll, half a
                                         # core at 100 polls/s, taken from the projector under test);
                                         # planned with the values it is two index lookups (~0.2 ms)
                                         prepare=False)
                rows = await cur.fetchall()
                seen_at = time.perf_counter()
                stats.polls += 1
                for tid, item in rows:
                    probes[tid].mark(SQL, orjson.loads(item)["meta"]["message_count"], seen_at)
            if (pause := interval - (time.perf_counter() - t0)) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)


async def wait_for(what: str, condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


class Watched:
    """The watched threads: ``threads_per_viewer`` active ones per viewer, each retired after
    ``messages_per_thread`` messages for a new one, so threads stay as short as real ones (the
    projector re-renders a touched thread from its whole history)."""

    def __init__(self, viewers: list[str], threads_per_viewer: int, messages_per_thread: int) -> None:
        self.tag, self.count, self.limit = uuid.uuid4().hex[:6], 0, messages_per_thread
        self.all: dict[str, Probe] = {}
        self.of: dict[str, dict[str, Probe]] = {v: {} for v in viewers}
        self.active = [self.new(v) for v in viewers for _ in range(threads_per_viewer)]

    def new(self, viewer: str) -> Probe:
        self.count += 1
        probe = Probe(f"fresh-{self.tag}-{self.count}", viewer, f"u-fresh-{self.tag}-{self.count}")
        self.all[probe.thread_id] = self.of[viewer][probe.thread_id] = probe
        return probe

    def next(self, i: int) -> tuple[Probe, bool]:
        """The thread of the ``i``-th message, and whether it is a new one to start first."""
        slot = i % len(self.active)
        if len(self.active[slot].published) < self.limit:
            return self.active[slot], False
        self.active[slot] = self.new(self.active[slot].viewer)
        return self.active[slot], True


def thread_started(p: Probe, when: str) -> bytes:
    return envelope("thread.started", {
        "thread_id": p.thread_id,
        "client": {"id": p.viewer, "name": "Watched Viewer", "avatar_url": None},
        "provider": {"id": p.counterparty, "name": "Probe Sender", "business_name": "Probe Co",
                     "avatar_url": "https://cdn.example/probe.jpg"},
        "service_type": "live_performance", "state": "pending_quote", "created_at": when,
    }, when)


def message_created(p: Probe, i: int, when: str) -> bytes:
    return envelope("message.created", {
        "thread_id": p.thread_id, "message_id": f"m-{i}", "sender_id": p.counterparty,
        "sender_type": "provider", "message_type": "user", "visible_to": "both",
        "content": f"probe {i}", "system_key": None, "system_args": None, "attachment": None,
        "created_at": when,
    }, when)


async def freshness(args: argparse.Namespace, settings: Settings, cached_url: str, plain_url: str,
                    viewers: list[str]) -> dict:
    topic = settings.topic_prefix + "threads.events"
    watched = Watched(viewers, args.threads_per_viewer, args.messages_per_thread)
    clock = Clock(api_preview.EPOCH + timedelta(days=120))
    path = f"/v1/threads/preview?limit={args.limit}"
    stop = asyncio.Event()
    stats = {m: PollStats() for m in MODES}

    def inbox(mode: str, url: str, viewer: str) -> Inbox:
        return Inbox(mode, url, path, auth(args.jwt_secret, viewer), watched.of[viewer], stats[mode])

    clients = [asyncio.create_task(poller(inbox(mode, url, v), args.poll_interval, stop))
               for mode, url in ((CACHED, cached_url), (PLAIN, plain_url)) for v in viewers]
    clients += [asyncio.create_task(pushed(inbox(SSE, cached_url, v), cached_url, v, stop)) for v in viewers]
    clients.append(asyncio.create_task(sql_poller(settings.database_url, watched.all, args.poll_interval, stop, stats[SQL])))
    # A product's producer: what Publisher.connect sets (acks="all", 2 MiB requests) and aiokafka's
    # linger_ms=0 (it is not set there either): each send goes out at once, acknowledged by every replica.
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                max_request_size=MAX_REQUEST_BYTES, linger_ms=0)
    await producer.start()
    try:
        for p in watched.active:
            await producer.send(topic, thread_started(p, clock.next()), key=p.thread_id.encode())
        await producer.flush()
        say(f"(d) {len(watched.active)} threads for {len(viewers)} viewers published; waiting for the projector "
            "(consumer-group join) to list them in every mode")
        try:
            await wait_for("the watched threads to be listed",
                           lambda: all(len(p.listed) == len(MODES) for p in watched.active), 90)
        except TimeoutError:
            for mode, st in stats.items():
                say(f"  {mode}: listed {sum(mode in p.listed for p in watched.active)}/{len(watched.active)}, "
                    f"{st.polls} reads, {st.errors} errors {st.first_error}")
            raise
        for st in stats.values():
            st.polls = st.not_modified = st.pushed = 0

        total = int(args.rate * args.fresh_seconds)
        say(f"(d) publishing {total:,} message.created at {args.rate:g}/s for {args.fresh_seconds:g}s; "
            f"{2 * len(viewers)} HTTP pollers and one SQL poller every {args.poll_interval * 1000:g} ms, "
            f"{len(viewers)} SSE listeners")
        futures, started = [], 0
        began = report = time.perf_counter()
        for i in range(total):
            if (ahead := began + i / args.rate - time.perf_counter()) > 0:
                await asyncio.sleep(ahead)
            p, new = watched.next(i)
            if new:
                futures.append(await producer.send(topic, thread_started(p, clock.next()), key=p.thread_id.encode()))
                started += 1
            value = message_created(p, i, clock.next())
            p.published.append(time.perf_counter())
            futures.append(await producer.send(topic, value, key=p.thread_id.encode()))
            if time.perf_counter() - report >= 2:
                report = time.perf_counter()
                seen = ", ".join(f"{m} {sum(len(p.seen[m]) for p in watched.all.values()):,}" for m in MODES)
                say(f"  published {i + 1:,}/{total:,}; visible: {seen}")
        last_send = time.perf_counter()
        acked = sum(1 for r in await asyncio.gather(*futures, return_exceptions=True) if not isinstance(r, BaseException))
        with contextlib.suppress(TimeoutError):
            await wait_for("every event to be visible", lambda: all(
                len(p.seen[m]) == len(p.published) for p in watched.all.values() for m in MODES), args.settle)
        elapsed = time.perf_counter() - began
    finally:
        stop.set()
        for task in clients:
            if task.done() and not task.cancelled() and task.exception() is not None:
                say(f"a client failed: {task.exception()!r}")
        await asyncio.gather(*clients, return_exceptions=True)
        await producer.stop()
    probes = list(watched.all.values())
    lat = {m: sorted((s - t) * 1000 for p in probes for t, s in zip(p.published, p.seen[m])) for m in MODES}
    return {"sent": total, "started": started, "acked": acked, "elapsed": elapsed, "lat": lat, "stats": stats,
            "rate": (total + started - 1) / (last_send - began) if total > 1 else 0.0,
            "missing": {m: total - len(lat[m]) for m in MODES}}


# -- report --------------------------------------------------------------------------------------

def report_serving(args: argparse.Namespace, sizes: int, srv: dict) -> None:
    threads, messages = args.generated
    base = srv["plain"]
    rows = [("path", "req/s", "p50 ms", "p99 ms", "server p50 ms", "req/s vs (b)", "p50 vs (b)", "requests", "errors")]
    for key in ("hit", "plain", "r304", "p304"):
        r: LoadResult = srv[key]
        rows.append((r.label, f"{r.rps:,.0f}", f"{r.p(0.5):.2f}", f"{r.p(0.99):.2f}", f"{r.srv(0.5):.2f}",
                     f"{r.rps / base.rps:.2f}x" if base.rps else "-",
                     f"{base.p(0.5) / r.p(0.5):.2f}x" if r.latencies else "-", f"{len(r.latencies):,}", str(r.errors)))
    print()
    print(table(f"GET /v1/threads/preview?limit={args.limit} — {messages:,} messages, {threads:,} threads, "
                f"{len(args.heavy)} viewers with ~{sizes:,} listed threads each; {args.concurrency} concurrent, "
                f"{args.workers} worker(s) per API, {args.duration:g}s per phase", rows))
    print(f"bodies rendered by the cached API during the serving phases: {srv['renders']:.0f} (0 = every 200 was a HIT)")
    hit, r304 = srv["hit"], srv["r304"]
    print(f"preview limit={args.limit}: cached HIT {hit.rps:,.0f} req/s p50 {hit.p(0.5):.2f} ms p99 {hit.p(0.99):.2f} ms"
          f" | uncached {base.rps:,.0f} req/s p50 {base.p(0.5):.2f} ms p99 {base.p(0.99):.2f} ms"
          f" | 304 (Redis) {r304.rps:,.0f} req/s p50 {r304.p(0.5):.2f} ms"
          f" | ratios vs uncached: HIT {hit.rps / base.rps:.2f}x, 304 {r304.rps / base.rps:.2f}x req/s")
    for key in ("hit", "plain", "r304", "p304"):
        if srv[key].errors:
            print(f"{srv[key].label}: {srv[key].errors} errors, first: {srv[key].first_error}")
    if srv["problems"]:
        print(f"WARNING: cached and uncached bodies differ for {srv['problems']}")


def report_freshness(args: argparse.Namespace, fresh: dict) -> None:
    rows = [("publish -> visible", "events", "p50 ms", "p90 ms", "p99 ms", "max ms", "missing",
             "reads/s", "304 share", "200s: server p50 ms", "p50 vs uncached")]
    lat, base = fresh["lat"], pct(fresh["lat"][PLAIN], 0.5)
    for mode in MODES:
        got, st = lat[mode], fresh["stats"][mode]
        rows.append((LABELS[mode], f"{len(got):,}", f"{pct(got, 0.5):.1f}", f"{pct(got, 0.9):.1f}",
                     f"{pct(got, 0.99):.1f}", f"{got[-1]:.1f}" if got else "-", str(fresh["missing"][mode]),
                     f"{st.polls / fresh['elapsed']:,.0f}", f"{st.not_modified / st.polls:.0%}" if st.polls else "-",
                     f"{pct(sorted(st.server_ms), 0.5):.2f}" if st.server_ms else "-",
                     f"{pct(got, 0.5) / base:.2f}x" if got and base else "-"))
    print()
    print(table(f"(d) freshness: {fresh['sent']:,} message.created + {fresh['started']:,} thread.started at "
                f"{fresh['rate']:,.1f} events/s achieved (asked {args.rate:g}/s; {fresh['acked']:,} acked) for "
                f"{len(args.watched)} viewers x {args.threads_per_viewer} active threads of "
                f"{args.messages_per_thread} messages; real projector and broker; per viewer one poller per API "
                f"every {args.poll_interval * 1000:g} ms and one SSE listener; one SQL poller", rows))
    print(f"freshness at {fresh['rate']:,.0f} events/s, p50/p99 ms: "
          + " | ".join(f"{m} {pct(lat[m], 0.5):.1f}/{pct(lat[m], 0.99):.1f}" for m in MODES)
          + f" (polling includes up to {args.poll_interval * 1000:g} ms of poll interval; "
          f"SSE received {fresh['stats'][SSE].pushed:,} changed events)")
    for mode, st in fresh["stats"].items():
        if st.errors:
            print(f"{mode}: {st.errors} errors, first: {st.first_error}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cache_freshness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=200_000, help="generated messages (default 200k)")
    p.add_argument("--avg-messages", type=int, default=25, help="mean messages per generated thread (default 25)")
    p.add_argument("--heavy-users", type=int, default=4, help="viewers with big inboxes, the ones queried (default 4)")
    p.add_argument("--threads-per-heavy", type=int, default=1000, help="threads per heavy viewer (default 1000)")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per serving phase (default 8)")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--workers", type=int, default=1, help="uvicorn workers per API (default 1)")
    p.add_argument("--rate", type=float, default=200.0, help="(d) events per second (default 200)")
    p.add_argument("--fresh-seconds", type=float, default=20.0, help="(d) seconds of publishing (default 20)")
    p.add_argument("--threads-per-viewer", type=int, default=5, help="(d) active threads per viewer (default 5)")
    p.add_argument("--messages-per-thread", type=int, default=20,
                   help="(d) messages before a thread is replaced by a new one (default 20)")
    p.add_argument("--poll-interval", type=float, default=0.01, help="(d) seconds between polls (default 0.01)")
    p.add_argument("--partitions", type=int, default=3, help="(d) partitions per topic (default 3)")
    p.add_argument("--settle", type=float, default=30.0, help="(d) seconds to wait for the last events")
    p.add_argument("--skip-serving", action="store_true", help="only (d)")
    p.add_argument("--skip-freshness", action="store_true", help="only (a)-(c')")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the database")
    args = p.parse_args(argv)
    use_uvloop()
    with kafka() as bootstrap, redis_server() as redis_url, bench_database(args.keep) as url:
        plain = bench_settings(url, bootstrap)
        cached = replace(plain, redis_url=redis_url)
        args.jwt_secret = plain.jwt_secret
        args.heavy = heavy = api_preview.generate(url, args)
        args.watched = heavy
        with psycopg.connect(url) as conn:
            listed = conn.execute("SELECT count(*) FROM thread_previews WHERE user_id = ANY(%s) AND listed",
                                  (heavy,)).fetchone()[0]
        asyncio.run(create_topics(bootstrap, [plain.topic_prefix + t for t in TOPICS], partitions=args.partitions))
        argv_api = ["readside.cli", "api", "--workers", str(args.workers)]
        with server("api-redis", argv_api, cached) as api_r, server("api-plain", argv_api, plain) as api_p:
            srv = asyncio.run(serving(args, api_r.base_url, api_p.base_url, heavy)) if not args.skip_serving else None
            fresh = None
            if not args.skip_freshness:
                with projector_process(cached) as proj:
                    fresh = asyncio.run(freshness(args, cached, api_r.base_url, api_p.base_url, heavy))
                    if proj.proc.poll() is not None:
                        say(f"projector exited early ({proj.proc.returncode}); log {proj.log_path}")
    if srv is not None:
        report_serving(args, listed // len(heavy), srv)
    if fresh is not None:
        report_freshness(args, fresh)
    bad = (srv and (srv["problems"] or srv["renders"])) or (fresh and any(fresh["missing"].values()))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
