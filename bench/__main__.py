"""``python -m bench`` (or ``bench/run``): every hot path of issue 10 in one run, one table.

Each row is a figure, the baseline or ceiling it is compared with (measured in the same run, on
the same machine), their ratio, the target and PASS or MISS. The served path is
``GET /v1/threads/preview?limit=100`` for the heavy viewers, loaded with ``wrk`` (install:
``apt-get install -y wrk``; without it the Python client is used, with a warning). The rest comes
from the other bench modules (see ``bench/suite.py``). ``--quick`` is a small run (about 1.5 minutes);
the default sizes are the issue's (1M messages served, 1M events projected and rebuilt: about
10 minutes on 2 cores). Progress goes to stderr, the table to stdout. Exit status 1 if answers differ
(bytes, a cached phase rendering, an event never visible, rebuilt tables unequal); a MISS is a
target not reached, not a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass

from bench import _wrk, suite
from bench._common import kafka, pct, table, use_uvloop
from bench.cache_freshness import CACHED, SQL, SSE, redis_server

PARTS = ("served", "freshness", "projector", "rebuild")
FULL = dict(messages=1_000_000, threads_per_heavy=3000, duration=10.0, warmup=2.0, base_duration=10.0,
            fresh_seconds=20.0, events=1_000_000)
QUICK = dict(messages=200_000, threads_per_heavy=1000, duration=5.0, warmup=1.0, base_duration=5.0,
             fresh_seconds=5.0, events=60_000)


@dataclass
class Row:
    path: str
    figure: str
    p50: str = ""
    p99: str = ""
    against: str = ""
    its: str = ""
    ratio: str = ""
    target: str = ""
    result: str = ""


def _served_rows(load: dict) -> list[Row]:
    ceiling, base = load["ceiling"], load["base"]

    def row(key: str, share: float | None) -> Row:
        f = load[key]
        tail = f.p99 <= 3 * f.p50
        r = Row(f.label, f"{f.rps:,.0f} req/s", f"{f.p50:.2f} ms", f"{f.p99:.2f} ms")
        if key == "ceiling":
            r.target = "(reference)"
            return r
        r.against, r.its = "ceiling", f"{ceiling.rps:,.0f} req/s"
        ratio = f.rps / ceiling.rps if ceiling.rps else 0.0
        r.ratio = f"{ratio:.0%}"
        if key == "base":
            r.target, r.result = "(reference)", ""
            return r
        r.target = (f">= {share:.0%}, " if share else "") + "p99 <= 3x p50"
        misses = ([] if share is None or ratio >= share else ["ratio"]) + ([] if tail else [f"p99 {f.p99 / f.p50:.1f}x"])
        r.result = "PASS" if not misses else "MISS (" + ", ".join(misses) + ")"
        return r

    rows = [row("ceiling", None), row("hit", 0.40), row("r304", 0.60), row("pg200", 0.25), row("pg304", None),
            row("base", None)]
    pg = load["pg200"]
    x = pg.rps / base.rps if base.rps else float("inf")
    rows.append(Row("PostgreSQL 200 vs compute-on-read", f"{pg.rps:,.0f} req/s", "", "", "compute-on-read",
                    f"{base.rps:,.1f} req/s", f"{x:,.0f}x", ">= 300x", "PASS" if x >= 300 else "MISS"))
    return rows


def _fresh_rows(args: argparse.Namespace, fresh: dict) -> list[Row]:
    lat, sql = fresh["lat"], fresh["lat"][SQL]
    rows = []
    for mode, label in ((SQL, "freshness: committed (SQL poll)"), (CACHED, "freshness: poll api+redis, 10 ms"),
                        (SSE, "freshness: SSE push + refetch")):
        got = lat[mode]
        p50, p99 = pct(got, 0.5), pct(got, 0.99)
        r = Row(label, f"{fresh['rate']:,.0f} events/s", f"{p50:.1f} ms", f"{p99:.1f} ms")
        if mode != SQL:
            r.against, r.its, r.ratio = "committed p50", f"{pct(sql, 0.5):.1f} ms", f"{p50 / pct(sql, 0.5):.2f}x"
        if mode == SSE:
            steady = fresh["rate"] >= 0.95 * 1000
            r.target = "p50 <= 20, p99 <= 50 ms at 1,000/s"
            misses = ([] if p50 <= 20 else ["p50"]) + ([] if p99 <= 50 else ["p99"]) + ([] if steady else ["rate"])
            r.result = "PASS" if not misses else "MISS (" + ", ".join(misses) + ")"
        if fresh["missing"][mode]:
            r.result += f" {fresh['missing'][mode]} never visible"
        rows.append(r)
    return rows


def _stream_rows(s: dict) -> list[Row]:
    w = f"{s['window'] // 1000}k"
    rows = [
        Row(f"projector: first {w} events", f"{s['first']:,.0f} events/s", against="consume ceiling",
            its=f"{s['raw']:,.0f} events/s", ratio=f"{s['first'] / s['raw']:.0%}", target=">= 20,000 events/s",
            result="PASS" if s["first"] >= 20_000 else "MISS"),
        Row(f"projector: all {s['total']:,} events", f"{s['live']:,.0f} events/s", against="consume ceiling",
            its=f"{s['raw']:,.0f} events/s", ratio=f"{s['live'] / s['raw']:.0%}"),
        Row(f"projector drift: last {w} vs first {w}", f"{s['last']:,.0f} events/s", against=f"first {w}",
            its=f"{s['first']:,.0f} events/s", ratio=f"{s['last'] / s['first']:.0%}", target=">= 80% (over 1M)",
            result="PASS" if s["last"] >= 0.8 * s["first"] else "MISS"),
    ]
    if "rebuild" in s:
        ok = s["rebuild"] >= 40_000
        rows.append(Row(f"rebuild --workers 2: {s['total']:,} events in {s['rebuild_s']:.1f}s",
                        f"{s['rebuild']:,.0f} events/s", against="live projector", its=f"{s['live']:,.0f} events/s",
                        ratio=f"{s['rebuild'] / s['live']:.1f}x", target=">= 40,000 events/s, tables equal",
                        result=("PASS" if ok else "MISS") + ("" if s["rebuild_equal"] else " TABLES DIFFER")))
    return rows


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: about 1.5 minutes in all")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {','.join(PARTS)} (default all)")
    p.add_argument("--messages", type=int, help="served: generated messages (full 1M, quick 200k)")
    p.add_argument("--threads-per-heavy", type=int, help="served: threads per heavy viewer (full 3000, quick 1000)")
    p.add_argument("--duration", type=float, help="served: measured seconds per path (full 10, quick 5)")
    p.add_argument("--warmup", type=float, help="served: warm-up seconds per path (full 2, quick 1)")
    p.add_argument("--base-duration", type=float, help="served: measured seconds of compute-on-read")
    p.add_argument("--concurrency", type=int, default=16, help="served: connections (default 16)")
    p.add_argument("--rounds", type=int, default=2, help="served: turns each path takes, splitting --duration (default 2)")
    p.add_argument("--rate", type=float, default=1000.0, help="freshness: events/s published (default 1000)")
    p.add_argument("--fresh-seconds", type=float, help="freshness: seconds of publishing (full 20, quick 5)")
    p.add_argument("--events", type=int, help="projector and rebuild: events in the stream (full 1M, quick 60k)")
    p.add_argument("--rebuild-workers", type=int, default=2, help="rebuild bulk workers (default 2)")
    p.add_argument("--keep", action="store_true", help="keep the databases")
    args = p.parse_args(argv)
    for k, v in (QUICK if args.quick else FULL).items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    args.parts = {x.strip() for x in args.only.split(",") if x.strip()}
    if not args.parts <= set(PARTS):
        p.error(f"--only takes {', '.join(PARTS)}")
    # What the reused modules read from their own command lines.
    args.__dict__.update(limit=100, heavy_users=4, avg_messages=25, seed=1, partitions=3, threads_per_viewer=5,
                         messages_per_thread=20, poll_interval=0.01, settle=30.0, timeout=3600.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    began = time.perf_counter()
    rows: list[Row] = []
    notes: list[str] = []
    bad = False
    _wrk.warn_if_missing()
    with kafka() as bootstrap:
        if args.parts & {"served", "freshness"}:
            use_uvloop()
            with redis_server() as redis_url:
                args.serve_load = "served" in args.parts
                out = suite.served(args, bootstrap if "freshness" in args.parts else None, redis_url)
            asyncio.set_event_loop_policy(None)  # the projector runs on the default loop, as `readside projector`
            threads, messages = out["generated"]
            if "served" in args.parts:
                rows += _served_rows(out["load"])
                tool = out["load"]["hit"].tool
                notes.append(f"served: GET /v1/threads/preview?limit=100, {out['size']:,} bytes; {messages:,} messages, "
                             f"{threads:,} threads, 4 heavy viewers; {args.concurrency} connections, one worker each, "
                             f"{args.duration:g}s per path in {args.rounds} turns; load by {tool}"
                             + ("" if tool == "wrk" else f" (WARNING: install wrk: {_wrk.INSTALL})"))
                if out["load"]["renders"]:
                    notes.append(f"ERROR: the cached API rendered {out['load']['renders']:.0f} bodies during HIT/304 phases")
                    bad = True
                errors = {f.label: f.errors for f in out["load"].values() if isinstance(f, _wrk.Figures) and f.errors}
                if errors:
                    notes.append(f"ERROR: failed requests {errors}")
                    bad = True
            if out["problems"]:
                notes.append(f"ERROR: answers differ: {out['problems']}")
                bad = True
            if "fresh" in out:
                rows += _fresh_rows(args, out["fresh"])
                notes.append(f"freshness: {out['fresh']['sent']:,} message.created published at {args.rate:g}/s asked, "
                             f"real projector and broker, 4 viewers")
                bad = bad or any(out["fresh"]["missing"].values())
        if args.parts & {"projector", "rebuild"}:
            if "rebuild" not in args.parts:
                args.rebuild_workers = 0
            s = suite.stream(args, bootstrap)
            rows += _stream_rows(s) if "projector" in args.parts else _stream_rows(s)[-1:]
            notes.append(f"projector/rebuild: thread_stream of {s['total']:,} events, 3 partitions"
                         + (f"; rebuild phases {s['rebuild_phases']}" if "rebuild_phases" in s else ""))
            bad = bad or ("rebuild_equal" in s and not s["rebuild_equal"])
    header = Row("path", "figure", "p50", "p99", "compared with", "its figure", "ratio", "target", "result")
    print()
    print(table(f"python -m bench{' --quick' if args.quick else ''}: {time.perf_counter() - began:.0f}s; "
                f"ratios are within this run", [tuple(vars(r).values()) for r in (header, *rows)]))
    for note in notes:
        print(note)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
