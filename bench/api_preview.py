"""GET /v1/threads/preview?limit=100: the projection's lookup versus compute-on-read, same data.

Generates marketplace threads (no broker) into both sides: the normalized tables a
compute-on-read app would query (``threads_base``, ``messages``, ``reads_base``, COPY, with the
best indexes we could give them) AND, from the very same threads as contract events, the
projection's tables, written by the threads read model's own bulk loader (``bench._events.feed``:
``REGISTRY["threads"].bulk``, as ``readside rebuild`` fills them). Then, through real HTTP with a
concurrent client, for the heaviest viewers:

- projection: the real API (``python -m readside.cli api``), 200 and the 304 path (If-None-Match);
- baseline: ``bench._baseline_app`` — the same Starlette/uvicorn stack running the window
  function + aggregation query (see that module);
- both as bare SQL too (sequential, psycopg), to separate the query from the HTTP stack.

Both answers are compared byte for byte before timing. Default scale ~1M messages; for
"millions": ``--messages 3000000 --threads-per-heavy 5000``.
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

from bench import _baseline_app as baseline
from bench._common import bench_database, bench_settings, hammer, pct, say, server, table, use_uvloop
from bench._events import event, feed
from readside.api.auth import make_token
from readside.readmodels.threads.queries import inbox_page
from readside.schemas import Event
from readside.shared.jsonbytes import dumps

EPOCH = datetime(2026, 9, 1, 8, tzinfo=UTC)
SPAN_MS = 60 * 24 * 3600 * 1000
FIRST = ("Ann", "Bob", "Thandi", "Sipho", "Lerato", "Pieter", "Aisha", "Johan", "Naledi", "Chen", "Maria", "Kyle")
LAST = ("Lee", "Khumalo", "van der Merwe", "Naidoo", "Dlamini", "Smith", "Botha", "Mokoena", "Pillay", "Adams")
LINES = ("Hi! Are you free on the 5th?", "We're planning a wedding for about 120 guests.",
         "What would you charge for 4 hours?", "Do you bring your own equipment?", "Great, thanks so much!",
         "Yes, I'm available on that date.", "My rate is R1500 per hour, sound equipment included.",
         "Could you share the venue address?", "Sounds good, I'll pencil you in.", "Looking forward to it!",
         "Sorry for the late reply,\n\n it's been a crazy week.   ", "Perfect 👍", "Payment secures the booking.",
         "My partner loved your last set, so we'd really like to book you for the whole evening if you can.")
SERVICES = ("live_performance", "dj_set", "photography", "videography", "catering", "mc_hosting")
STATES = ("pending_quote", "quoted", "pending_payment", "booked", "completed", "cancelled")
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def at(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def profile(uid: str) -> tuple[str, str | None, str | None]:
    rng = random.Random(uid)
    first, last = rng.choice(FIRST), rng.choice(LAST)
    roll = rng.random()
    avatar = None if roll < 0.25 else PNG if roll < 0.4 else f"https://cdn.example/avatars/{uid}.jpg"
    return f"{first} {last}", None if rng.random() < 0.35 else f"DJ {first}", avatar


def make_thread(rng: random.Random, n: int, client: str, provider: str, count: int, profiles: dict) -> tuple:
    """One thread: its events (as producers send them) and its normalized rows (thread, messages,
    per-participant) for the baseline."""
    tid = f"t-{n:08d}"
    (cname, _, cav), (pname, pbiz, pav) = profiles[client], profiles[provider]
    video = rng.random() < 0.10
    stype = "personalized_video" if video else rng.choice(SERVICES)
    created_ms = rng.randrange(SPAN_MS)
    created, state = at(created_ms), rng.choice(STATES)
    paid_by_payment = rng.random() < (0.5 if video else 0.3)
    events = [event("thread.started", {
        "thread_id": tid, "client": {"id": client, "name": cname, "avatar_url": cav},
        "provider": {"id": provider, "name": pname, "business_name": pbiz, "avatar_url": pav},
        "service_type": stype, "state": state, "created_at": created}, created)]
    if paid_by_payment:
        paid = created + timedelta(minutes=30)
        events.append(event("payment.received", {"thread_id": tid, "payment_id": f"pay-{n:08d}", "amount_cents": 150_000,
                                                 "currency": "ZAR", "received_at": paid}, paid))
    thread_row = (tid, client, cname, cav, provider, pname, pbiz, pav, stype, created, state, paid_by_payment)
    msgs, t = [], created_ms
    for k in range(count):
        t += rng.randint(1_000, 7_200_000)
        when, roll, args, kind, visible, deleted = at(t), rng.random(), None, None, "both", False
        if k == 0 and roll < 0.7:
            sender, stype_, key, content = None, "system", "new_booking_request", f"New booking request from {cname}"
        elif roll < 0.02:
            sender, stype_, key, content = None, "system", "payment_received", "Payment received"
            visible = "both" if rng.random() < 0.7 else "provider"
        elif roll < 0.04:
            days = rng.choice((1, 2, 3, 7))
            sender, stype_, key, content = None, "system", "event_reminder", f"Your event is in {days} days"
            args = {"days_before": days, "date": (when + timedelta(days=days)).date().isoformat()}
        else:
            sender = client if rng.random() < 0.5 else provider
            stype_, key, content = ("client" if sender == client else "provider"), None, rng.choice(LINES)
            if rng.random() < 0.07:
                kind = "image" if rng.random() < 0.5 else "file"
                content = "" if rng.random() < 0.6 else content
            visible = "both" if rng.random() < 0.95 else rng.choice(("client", "provider"))
            deleted = rng.random() < 0.04
        mid = f"m-{n:08d}-{k:03d}"
        events.append(event("message.created", {
            "thread_id": tid, "message_id": mid, "sender_id": sender, "sender_type": stype_,
            "message_type": "system" if sender is None else "user", "visible_to": visible, "content": content,
            "system_key": key, "system_args": args,
            "attachment": {"kind": kind, "url": f"https://cdn.example/{mid}"} if kind else None, "created_at": when}, when))
        if deleted:
            gone = when + timedelta(seconds=30)
            events.append(event("message.deleted", {"thread_id": tid, "message_id": mid, "deleted_at": gone}, gone))
        msgs.append((tid, mid, sender, stype_, visible, content, key, dumps(args).decode() if args else None,
                     kind, when, deleted))
    participants = []
    for user in (client, provider):
        up_to = None
        if msgs and rng.random() < 0.8:
            up_to = msgs[int(len(msgs) * rng.random() ** 0.4)][9]
            read_at = up_to + timedelta(seconds=5)
            events.append(event("message.read", {"thread_id": tid, "reader_id": user, "read_up_to": up_to,
                                                 "read_at": read_at}, read_at))
        pinned = rng.random() < 0.08
        if pinned:
            pin_at = created + timedelta(seconds=1)
            events.append(event("thread.pinned", {"thread_id": tid, "user_id": user, "pinned": True,
                                                  "changed_at": pin_at}, pin_at))
        if up_to is not None or pinned:
            participants.append((tid, user, up_to, pinned))
    return events, thread_row, msgs, participants


def generate(url: str, args: argparse.Namespace) -> list[str]:
    """Fill both sides from one generated world; return the heavy viewers' ids."""
    rng = random.Random(args.seed)
    heavy = [f"u-{i + 1}" for i in range(args.heavy_users)]
    heavy_threads = args.heavy_users * args.threads_per_heavy
    threads = max(heavy_threads, args.messages // args.avg_messages)
    light = [f"u-{i + 1}" for i in range(args.heavy_users, args.heavy_users + max(50, threads // 4))]
    profiles = {u: profile(u) for u in heavy + light}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(baseline.BASELINE_DDL)
    # the baseline's own normalized tables (BASELINE_DDL)
    copies = [
        ("threads_base", "thread_id, client_id, client_name, client_avatar, provider_id, provider_name, "
         "provider_business_name, provider_avatar, service_type, created_at, state, paid_by_payment"),
        ("messages", "thread_id, message_id, sender_id, sender_type, visible_to, content, system_key, "
         "system_args, attachment_kind, created_at, deleted"),
        ("reads_base", "thread_id, user_id, read_up_to, pinned"),
    ]
    began, made = time.perf_counter(), [0, 0]

    def world(cp: list) -> Iterator[Event]:
        for n in range(threads):
            if n < heavy_threads:
                other = rng.choice(light)
                client, provider = (heavy[n % len(heavy)], other) if rng.random() < 0.5 else (other, heavy[n % len(heavy)])
            else:
                client, provider = rng.sample(light, 2)
            count = rng.randint(5, 2 * args.avg_messages - 5)
            events, thread_row, msgs, parts = make_thread(rng, n, client, provider, count, profiles)
            cp[0].write_row(thread_row)
            for row in msgs:
                cp[1].write_row(row)
            for row in parts:
                cp[2].write_row(row)
            made[0], made[1] = n + 1, made[1] + count
            yield from events

    conns = [psycopg.connect(url, autocommit=True) for _ in copies]
    try:
        with contextlib.ExitStack() as stack:
            cp = [stack.enter_context(c.cursor().copy(f"COPY {t} ({cols}) FROM STDIN")) for c, (t, cols) in zip(conns, copies)]
            events = feed(url, ["threads"], world(cp), batch=20_000,
                          note=lambda: f"{made[0]:,}/{threads:,} threads, {made[1]:,} messages")
    finally:
        for c in conns:
            c.close()
    elapsed = time.perf_counter() - began
    say(f"generated {threads:,} threads, {made[1]:,} messages ({events:,} events) in {elapsed:.1f}s "
        f"({made[1] / elapsed:,.0f} messages/s); indexing the baseline")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(baseline.BASELINE_INDEXES)
        conn.execute("VACUUM ANALYZE")
    say(f"data ready in {time.perf_counter() - began:.1f}s")
    args.generated = (threads, made[1])
    return heavy


def sql_timing(url: str, heavy: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Sequential p50 of each side's query alone (psycopg, prepared after 5 runs as in the servers)."""
    base_sql, out = baseline.preview_sql(None), ([], [])

    async def go() -> None:
        connect = psycopg.AsyncConnection.connect
        async with await connect(url, autocommit=True, options="-c TimeZone=UTC") as proj, \
                await connect(url, autocommit=True, options=baseline.PG_OPTIONS) as base:
            for i in range(runs):
                u = heavy[i % len(heavy)]
                t0 = time.perf_counter()
                await inbox_page(proj, u, None, None, 100)  # 100 items and whether there is more
                t1 = time.perf_counter()
                await (await base.execute(base_sql, {"u": u, "n": 101})).fetchall()
                out[0].append((t1 - t0) * 1000)
                out[1].append((time.perf_counter() - t1) * 1000)

    asyncio.run(go())
    return sorted(out[0]), sorted(out[1])


async def measure(args: argparse.Namespace, api_url: str, base_url: str, heavy: list[str]) -> dict:
    auth = [{"authorization": f"Bearer {make_token(args.jwt_secret, u)}"} for u in heavy]
    path = f"/v1/threads/preview?limit={args.limit}"
    etags, mismatches = [], []
    async with httpx.AsyncClient(timeout=120) as client:
        for u, h in zip(heavy, auth):
            a, b = await client.get(api_url + path, headers=h), await client.get(base_url + path, headers=h)
            if a.status_code != 200 or b.status_code != 200 or a.content != b.content:
                mismatches.append(u)
                say(f"MISMATCH for {u}: {a.status_code} {b.status_code}\n projection {a.text[:600]}\n baseline   {b.text[:600]}")
            etags.append({**h, "if-none-match": a.headers["etag"]})
    say(f"bodies identical for {len(heavy) - len(mismatches)}/{len(heavy)} viewers ({len(a.content)} bytes each)")
    kw = dict(concurrency=args.concurrency, duration=args.duration, warmup=args.warmup)
    out = {"mismatches": mismatches}
    for key, label, url, headers, expect in (
        ("proj", "projection 200", api_url, auth, 200),
        ("p304", "projection 304", api_url, etags, 304),
        ("base", "compute-on-read 200", base_url, auth, 200),
    ):
        say(f"load: {label}, {args.concurrency} concurrent, {args.warmup:g}+{args.duration:g}s")
        out[key] = await hammer(label, url, path, headers, expect=expect, **kw)
        say("  " + out[key].line())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.api_preview", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=1_000_000, help="total messages (default 1M)")
    p.add_argument("--avg-messages", type=int, default=25, help="mean messages per thread (default 25)")
    p.add_argument("--heavy-users", type=int, default=4, help="viewers with big inboxes, the ones queried (default 4)")
    p.add_argument("--threads-per-heavy", type=int, default=3000, help="threads per heavy viewer (default 3000)")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase (default 10)")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--workers", type=int, default=1, help="uvicorn workers for each server (default 1)")
    p.add_argument("--sql-runs", type=int, default=40)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the database")
    args = p.parse_args(argv)
    use_uvloop()
    with bench_database(args.keep) as url:
        settings = bench_settings(url)
        args.jwt_secret = settings.jwt_secret
        heavy = generate(url, args)
        with psycopg.connect(url) as conn:
            sizes = conn.execute("SELECT count(*) FROM thread_previews WHERE user_id = ANY(%s) AND listed", (heavy,)).fetchone()
        proj_sql, base_sql = sql_timing(url, heavy, args.sql_runs)
        with server("api", ["readside.cli", "api", "--workers", str(args.workers)], settings) as api, \
                server("baseline", ["bench._baseline_app", "--workers", str(args.workers)], settings) as base:
            res = asyncio.run(measure(args, api.base_url, base.base_url, heavy))
    threads, messages = args.generated
    proj, p304, b = res["proj"], res["p304"], res["base"]
    rows = [("path", "req/s", "p50 ms", "p99 ms", "server p50 ms", "requests", "errors")]
    for r in (proj, p304, b):
        rows.append((r.label, f"{r.rps:.1f}", f"{r.p(0.5):.2f}", f"{r.p(0.99):.2f}", f"{r.srv(0.5):.2f}",
                     str(len(r.latencies)), str(r.errors)))
    rows.append(("SQL only: projection lookup", "", f"{pct(proj_sql, 0.5):.2f}", f"{pct(proj_sql, 0.99):.2f}", "", str(len(proj_sql)), ""))
    rows.append(("SQL only: compute-on-read", "", f"{pct(base_sql, 0.5):.2f}", f"{pct(base_sql, 0.99):.2f}", "", str(len(base_sql)), ""))
    print()
    print(table(f"GET /v1/threads/preview?limit={args.limit} — {messages:,} messages, {threads:,} threads, "
                f"{len(heavy)} viewers with ~{sizes[0] // len(heavy):,} listed threads each; "
                f"{args.concurrency} concurrent, {args.workers} worker(s), {args.duration:g}s per phase", rows))
    print()
    print(f"preview limit={args.limit}: projection {proj.rps:.0f} req/s p50 {proj.p(0.5):.1f} ms p99 {proj.p(0.99):.1f} ms"
          f" | compute-on-read {b.rps:.0f} req/s p50 {b.p(0.5):.1f} ms p99 {b.p(0.99):.1f} ms"
          f" | ratio {proj.rps / b.rps if b.rps else float('inf'):.1f}x req/s, {b.p(0.5) / proj.p(0.5):.1f}x p50"
          f" | 304 path {p304.rps:.0f} req/s ({p304.rps / b.rps if b.rps else float('inf'):.0f}x)")
    print(f"SQL alone p50: lookup {pct(proj_sql, 0.5):.2f} ms vs compute-on-read {pct(base_sql, 0.5):.2f} ms "
          f"= {pct(base_sql, 0.5) / pct(proj_sql, 0.5):.0f}x")
    for r in (proj, p304, b):
        if len(r.latencies) < 20:
            print(f"{r.label}: only {len(r.latencies)} requests measured; use a longer --duration")
        if r.errors:
            print(f"{r.label}: {r.errors} errors, first: {r.first_error}")
    if res["mismatches"]:
        print(f"WARNING: bodies differ for {res['mismatches']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
