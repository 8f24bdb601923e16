"""The measurements behind ``python -m bench``, built from the other bench modules.

- ``served``: ``bench.api_preview``'s data (COPY, no broker) served by five processes side by side:
  the ceiling (``bench._ceiling_app``: the API's server stack returning the API's bytes from
  memory), the API with Redis, the API without Redis, and the compute-on-read baseline
  (``bench._baseline_app``). After checking every body is byte-identical, ``bench._wrk`` loads
  ``GET /v1/threads/preview?limit=100`` for the heavy viewers on each path. Then, on the same
  servers, ``bench.cache_freshness.freshness``: a real projector and broker, publish -> visible.
- ``stream``: one ``readside.load.thread_stream`` on fresh topics, then ``bench.projector_throughput``'s
  consume ceiling and live projector (its batches give the rate of the first and the last
  ``window`` events), then ``readside rebuild threads --workers N`` (``bench.rebuild.rebuild``) on
  the same topics, its tables compared with the live ones (``--verify``'s comparison).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import tempfile
import time
from dataclasses import replace

import orjson

from bench import _ceiling_app, _wrk, api_preview, cache_freshness
from bench._common import Connection, bench_database, bench_settings, publish_fresh, say, server
from bench.projector_throughput import TOPICS, Observed, consume, run_projector_until
from bench.rebuild import _same, rebuild
from readside.load import thread_stream
from readside.projector.rebuild import Options, Rebuilder
from readside.readmodels.registry import REGISTRY
from readside.shared.kafka import create_topics

PATH = "/v1/threads/preview?limit={limit}"


async def _check(args: argparse.Namespace, urls: dict[str, str], heavy: list[str]) -> dict:
    """Every path answers the same bytes, the second cached GET is a HIT; the ETags for the 304s."""
    path = PATH.format(limit=args.limit)
    heads = [cache_freshness.auth(args.jwt_secret, u) for u in heavy]
    conns = {k: Connection(u) for k, u in urls.items() if k != "ceiling"}
    out = {"heads": heads, "r304": [], "p304": [], "bodies": {}, "problems": []}
    try:
        for u, h in zip(heavy, heads):
            got = {k: await c.get(path, h) for k, c in conns.items()}
            for _ in range(20):  # the first GET seeds the version, the next renders and stores the body
                hit = await conns["cached"].get(path, h)
                if hit[1].get(b"x-cache") == b"HIT":
                    break
                await asyncio.sleep(0.05)
            bodies = {k: b for k, (s, _, b) in got.items()} | {"hit": hit[2]}
            statuses = {k: s for k, (s, _, _) in got.items()} | {"hit": hit[0]}
            if set(statuses.values()) != {200} or hit[1].get(b"x-cache") != b"HIT" or len(set(bodies.values())) != 1:
                out["problems"].append(u)
                say(f"MISMATCH for {u}: {statuses} x-cache {hit[1].get(b'x-cache')}")
            out["r304"].append(h | {"if-none-match": hit[1][b"etag"].decode()})
            out["p304"].append(h | {"if-none-match": got["plain"][1][b"etag"].decode()})
            out["bodies"][h["authorization"]] = [hit[2].decode(), hit[1][b"etag"].decode()]
        for key, heads304 in (("cached", out["r304"]), ("plain", out["p304"])):
            status, _, _ = await conns[key].get(path, heads304[0])
            if status != 304:
                out["problems"].append(f"{key} answered {status} to its own ETag")
    finally:
        for c in conns.values():
            c.close()
    out["size"] = len(hit[2])
    return out


async def _load_all(args: argparse.Namespace, urls: dict[str, str], checked: dict) -> dict:
    path = PATH.format(limit=args.limit)
    kw = dict(concurrency=args.concurrency, duration=args.duration, warmup=args.warmup)
    heads = checked["heads"]
    out: dict = {}
    phases = (
        ("ceiling", "ceiling: same stack, bytes from memory", urls["ceiling"], heads, 200),
        ("hit", "Redis HIT 200", urls["cached"], heads, 200),
        ("r304", "Redis 304", urls["cached"], checked["r304"], 304),
        ("pg200", "PostgreSQL 200 (no Redis)", urls["plain"], heads, 200),
        ("pg304", "PostgreSQL 304 (no Redis)", urls["plain"], checked["p304"], 304),
        ("base", "compute-on-read 200 (baseline)", urls["base"], heads, 200),
    )
    # The paths take turns, ``rounds`` times, so a change in the machine's load (other processes
    # on the same 2 cores) weighs on all of them alike; compute-on-read (slow) runs once, last.
    runs: dict[str, list] = {key: [] for key, *_ in phases}
    before = await cache_freshness.renders(urls["cached"])
    for r in range(args.rounds):
        for key, label, url, h, expect in phases[:-1]:
            say(f"load: {label}, {args.concurrency} connections, {kw['warmup']:g}+{kw['duration'] / args.rounds:g}s"
                f" (round {r + 1}/{args.rounds})")
            runs[key].append(await _wrk.load(label, url, path, h, expect=expect, **dict(kw, duration=kw["duration"] / args.rounds)))
            say("  " + runs[key][-1].line())
    out["renders"] = await cache_freshness.renders(urls["cached"]) - before  # HITs and 304s render nothing
    key, label, url, h, expect = phases[-1]
    say(f"load: {label}, {args.concurrency} connections, {min(args.warmup, 1.0):g}+{args.base_duration:g}s")
    runs[key].append(await _wrk.load(label, url, path, h, expect=expect, concurrency=args.concurrency,
                                     duration=args.base_duration, warmup=min(args.warmup, 1.0)))
    say("  " + runs[key][-1].line())
    for key, label, *_ in phases:
        out[key] = _wrk.combine(label, runs[key])
    return out


def served(args: argparse.Namespace, bootstrap: str | None, redis_url: str) -> dict:
    """The served-path figures and, if ``bootstrap``, freshness on the same servers."""
    with bench_database(args.keep) as url:
        plain = bench_settings(url, bootstrap or "127.0.0.1:9")
        cached = replace(plain, redis_url=redis_url)
        args.jwt_secret = plain.jwt_secret
        say(f"[served] generating {args.messages:,} messages ({args.heavy_users} heavy viewers x "
            f"{args.threads_per_heavy:,} threads)")
        heavy = api_preview.generate(url, args)
        argv_api = ["readside.cli", "api", "--workers", "1"]
        ceiling_file = tempfile.NamedTemporaryFile(suffix=".json", prefix="rs-bench-ceiling-", delete=False)
        ceiling_file.close()
        os.environ[_ceiling_app.ENV] = ceiling_file.name
        out: dict = {"generated": args.generated}
        try:
            with server("api-redis", argv_api, cached) as api_r, server("api-plain", argv_api, plain) as api_p, \
                    server("baseline", ["bench._baseline_app", "--workers", "1"], plain) as base:
                urls = {"cached": api_r.base_url, "plain": api_p.base_url, "base": base.base_url}
                say("[served] checking that every path answers the same bytes")
                checked = asyncio.run(_check(args, urls, heavy))
                out["problems"], out["size"] = checked["problems"], checked["size"]
                if args.serve_load:
                    with open(ceiling_file.name, "wb") as f:
                        f.write(orjson.dumps(checked["bodies"]))
                    with server("ceiling", ["bench._ceiling_app"], plain) as ceiling:
                        urls["ceiling"] = ceiling.base_url
                        first = checked["heads"][0]
                        with contextlib.closing(Connection(ceiling.base_url)) as c:
                            s, _, b = asyncio.run(c.get(PATH.format(limit=args.limit), first))
                        if s != 200 or b.decode() != checked["bodies"][first["authorization"]][0]:
                            out["problems"].append("the ceiling does not answer the API's bytes")
                        out["load"] = asyncio.run(_load_all(args, urls, checked))
                if bootstrap is not None:
                    out["fresh"] = _freshness(args, bootstrap, cached, urls, heavy)
        finally:
            os.unlink(ceiling_file.name)
            os.environ.pop(_ceiling_app.ENV, None)
    return out


def _freshness(args: argparse.Namespace, bootstrap: str, cached, urls: dict, heavy: list[str]) -> dict:
    asyncio.run(create_topics(bootstrap, [cached.topic_prefix + t for t in cache_freshness.TOPICS],
                              partitions=args.partitions))
    args.watched = heavy
    say(f"[freshness] {args.rate:g} events/s for {args.fresh_seconds:g}s through a real projector")
    with cache_freshness.projector_process(cached) as proj:
        fresh = asyncio.run(cache_freshness.freshness(args, cached, urls["cached"], urls["plain"], heavy))
        if proj.proc.poll() is not None:
            say(f"projector exited early ({proj.proc.returncode}); log {proj.log_path}")
    return fresh


# -- the event stream: projector and rebuild --------------------------------------------------

def _windows(batches: list[tuple[int, float, float]], window: int) -> tuple[float, float]:
    """Events/s over the first ``window`` events and over the last ``window`` (batch granularity)."""
    total = sum(n for n, _, _ in batches)
    done, first_end, last_start = 0, None, None
    for n, t0, t1 in batches:
        if last_start is None and done + n > total - window:
            last_start = (t0, done)
        done += n
        if first_end is None and done >= window:
            first_end = (t1, done)
    begin, end = batches[0][1], batches[-1][2]
    first = first_end[1] / (first_end[0] - begin)
    last = (total - last_start[1]) / (end - last_start[0])
    return first, last


def stream(args: argparse.Namespace, bootstrap: str) -> dict:
    began = time.perf_counter()
    records = thread_stream(threads=max(1, round(args.events / 25.7)), seed=args.seed)
    say(f"[projector] generated {len(records):,} events in {time.perf_counter() - began:.1f}s")
    with bench_database(args.keep) as url:
        settings = bench_settings(url, bootstrap)
        prefix = settings.topic_prefix
        sent = publish_fresh(records, bootstrap, prefix, TOPICS, args.partitions)
        del records
        say("[projector] (a) consume + orjson.loads: the ceiling")
        raw_s, heads, _ = asyncio.run(consume(bootstrap, prefix, args.partitions, sent, "json"))
        total = sum(heads.values())
        say(f"[projector] live projector from an empty database to {total:,} events")
        Observed.log.clear()
        run_projector_until(settings, heads, args.timeout)
        batches = sorted(Observed.log, key=lambda b: b[1])
        live_s = batches[-1][2] - batches[0][1]
        window = min(200_000, total // 5)
        first, last = _windows(batches, window)
        out = {"total": total, "raw": total / raw_s, "live": total / live_s, "window": window,
               "first": first, "last": last}
        if args.rebuild_workers:
            say(f"[rebuild] readside rebuild threads --workers {args.rebuild_workers}")
            options = Options(bulk_batch=50_000, workers=args.rebuild_workers, stream=io.StringIO())
            rebuilder, wall, line = rebuild(settings, REGISTRY["threads"], options)
            say("  " + line)
            differ = asyncio.run(_same(url, "rs_prev_threads", "public"))
            out.update(rebuild_s=wall, rebuild=total / wall, rebuild_equal=not differ,
                       rebuild_phases=", ".join(f"{k} {v:.1f}s" for k, v in rebuilder.timings.items()))
            with contextlib.suppress(Exception):
                asyncio.run(Rebuilder(settings, REGISTRY["threads"], Options(stream=io.StringIO())).drop_previous())
    return out
