"""``python -m bench.capacity``: the per-core figures behind docs/capacity.md.

What each part spends per event projected and per request served, read around each phase from the
parts themselves (not from the client):

- CPU seconds of the process doing the work: the projector (this process: it runs in a thread
  here, the main thread only polls the checkpoints), or the API (its process group, ``/proc``);
- CPU seconds of the PostgreSQL backends connected to the bench's database (``pg_stat_activity``'s
  pids, ``/proc/<pid>/stat``): the server's background writers are not counted;
- PostgreSQL transactions and rows written (``pg_stat_database``), Redis CPU (``INFO cpu``) and
  commands by name (``INFO commandstats``) of the run's own embedded Valkey.

The phases: the projector on a ``thread_stream`` of ``--events`` (3 partitions, with Redis, so its
bumps count), then ``wrk`` on ``GET /v1/threads/preview?limit=100`` of ``bench.api_preview``'s heavy
viewers: Redis HIT, Redis 304, PostgreSQL 200 and 304 (one API worker each). Per core = 1 / CPU per
unit: what one core of that part does when it is the bottleneck. ``--quick`` is about 2 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import psycopg
import redis

from bench import _wrk, api_preview, suite
from bench.__main__ import parse
from bench._common import bench_database, bench_settings, kafka, publish_fresh, say, server, table, use_uvloop
from bench.cache_freshness import redis_server
from bench.projector_throughput import TOPICS, Observed, consume, run_projector_until
from readside.load import thread_stream

TICK = os.sysconf("SC_CLK_TCK")
STATS_FLUSH = 1.2  # s: PostgreSQL backends report their counters at most once a second


def _cpu(pid: int) -> float:
    """utime + stime of ``pid``, in seconds (0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def _group(pgid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rpartition(")")[2].split()[2]) == pgid:
                        out.append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    return out


@dataclass
class Snap:
    at: float
    work: float  # CPU s of the process doing the work
    pg: dict[int, float]  # backend pid -> CPU s
    xacts: int
    rows: int  # inserted + updated + deleted
    redis_cpu: float
    redis_calls: dict[str, int]


class Meter:
    def __init__(self, url: str, redis_url: str) -> None:
        self.url, self.redis = url, redis.Redis.from_url(redis_url)

    def snap(self, work_pgid: int | None) -> Snap:
        pg = self.backends()
        with psycopg.connect(self.url, autocommit=True) as conn:
            xacts, rows = conn.execute(
                "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database "
                "WHERE datname = current_database()").fetchone()  # type: ignore[misc]
        cpu = self.redis.info("cpu")
        calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in self.redis.info("commandstats").items()}
        work = time.process_time() if work_pgid is None else sum(_cpu(p) for p in _group(work_pgid))
        return Snap(time.perf_counter(), work, pg, xacts, rows,
                    cpu["used_cpu_sys"] + cpu["used_cpu_user"], calls)

    def backends(self) -> dict[int, float]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            pids = [r[0] for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
        return {p: _cpu(p) for p in pids}

    @contextlib.contextmanager
    def watching(self, snap: Snap) -> Iterator[None]:
        """Sample the backends' CPU every 0.2 s into ``snap.pg`` (kept per pid, last value seen):
        backends that end before the closing snapshot (the projector's pool) still count."""
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.2):
                for pid, cpu in self.backends().items():
                    if cpu:
                        snap.pg[pid] = max(cpu, snap.pg.get(pid, 0.0))

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()

    @staticmethod
    def spent(a: Snap, b: Snap, units: int) -> dict:
        """Per unit (event or request): CPU µs of each part, PostgreSQL transactions and rows, Redis commands."""
        pg = sum(cpu - a.pg.get(pid, 0.0) for pid, cpu in b.pg.items())
        calls = {k: v - a.redis_calls.get(k, 0) for k, v in b.redis_calls.items() if k != "info"}
        calls = {k: v for k, v in calls.items() if v > 0}
        n = max(units, 1)
        return {"units": units, "wall": b.at - a.at, "work_us": (b.work - a.work) / n * 1e6, "pg_us": pg / n * 1e6,
                "redis_us": (b.redis_cpu - a.redis_cpu) / n * 1e6, "xacts": (b.xacts - a.xacts) / n,
                "rows": (b.rows - a.rows) / n, "redis_cmds": {k: v / n for k, v in sorted(calls.items())}}


def _row(label: str, unit: str, s: dict) -> tuple[str, ...]:
    per_core = 1e6 / s["work_us"] if s["work_us"] else 0.0
    cmds = ", ".join(f"{k} {v:.2g}" for k, v in s["redis_cmds"].items()) or "-"
    return (label, f"{s['units']:,} {unit}s", f"{s['work_us']:,.0f}", f"{s['pg_us']:,.0f}", f"{s['redis_us']:,.1f}",
            f"{per_core:,.0f} {unit}s/s", f"{1e6 / s['pg_us']:,.0f}" if s["pg_us"] else "-",
            f"{s['xacts']:.3g}", f"{s['rows']:.3g}", cmds)


def projector(args: argparse.Namespace, bootstrap: str, redis_url: str) -> dict:
    records = thread_stream(threads=max(1, round(args.events / 25.7)), seed=args.seed)
    with bench_database(args.keep) as url:
        settings = replace(bench_settings(url, bootstrap), redis_url=redis_url)
        sent = publish_fresh(records, bootstrap, settings.topic_prefix, TOPICS, args.partitions)
        del records
        _, heads, _ = asyncio.run(consume(bootstrap, settings.topic_prefix, args.partitions, sent, "json"))
        meter = Meter(url, redis_url)
        say(f"[capacity] projector: {sent:,} events, with Redis")
        Observed.log.clear()
        before = meter.snap(None)
        seen = Snap(0.0, 0.0, {}, 0, 0, 0.0, {})
        with meter.watching(seen):  # the pool's backends start and end with the projector: counted from 0
            run_projector_until(settings, heads, args.timeout)
        time.sleep(STATS_FLUSH)
        after = meter.snap(None)
        after.pg = seen.pg | after.pg
        meter.redis.close()
        out = Meter.spent(before, after, sent)
        out["rate"] = sent / (Observed.log[-1][2] - Observed.log[0][1]) if Observed.log else 0.0
        out["batches"] = len(Observed.log)
        return out


def served(args: argparse.Namespace, redis_url: str) -> dict:
    out: dict = {}
    with bench_database(args.keep) as url:
        plain = bench_settings(url)
        cached = replace(plain, redis_url=redis_url)
        args.jwt_secret = plain.jwt_secret
        say(f"[capacity] served: generating {args.messages:,} messages")
        heavy = api_preview.generate(url, args)
        argv = ["readside.cli", "api", "--workers", "1"]
        meter = Meter(url, redis_url)
        with server("api-redis", argv, cached) as api_r, server("api-plain", argv, plain) as api_p:
            urls = {"cached": api_r.base_url, "plain": api_p.base_url}
            checked = asyncio.run(suite._check(args, urls, heavy))
            if checked["problems"]:
                raise SystemExit(f"answers differ: {checked['problems']}")
            path = suite.PATH.format(limit=args.limit)
            for key, label, srv, heads, expect in (
                ("hit", "Redis HIT 200", api_r, checked["heads"], 200),
                ("r304", "Redis 304", api_r, checked["r304"], 304),
                ("pg200", "PostgreSQL 200", api_p, checked["heads"], 200),
                ("pg304", "PostgreSQL 304", api_p, checked["p304"], 304),
            ):
                kw = dict(concurrency=args.concurrency, expect=expect)
                asyncio.run(_wrk.load(label, srv.base_url, path, heads, duration=args.warmup, warmup=0, **kw))
                before = meter.snap(srv.proc.pid)
                fig = asyncio.run(_wrk.load(label, srv.base_url, path, heads, duration=args.duration, warmup=0, **kw))
                time.sleep(STATS_FLUSH)
                after = meter.snap(srv.proc.pid)
                out[key] = Meter.spent(before, after, fig.requests) | {"label": label, "rps": fig.rps, "errors": fig.errors}
                say(f"  {fig.line()}")
        meter.redis.close()
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)  # python -m bench's sizes: --quick, --events, --messages, --duration...
    _wrk.warn_if_missing()
    began = time.perf_counter()
    rows, notes = [], []
    with kafka() as bootstrap, redis_server() as redis_url:
        if "projector" in args.parts:
            p = projector(args, bootstrap, redis_url)
            rows.append(_row(f"projector (thread mix, {p['batches']} batches, {p['rate']:,.0f} events/s)", "event", p))
            notes.append(f"projector: {p['xacts'] * p['units'] / max(p['batches'], 1):.1f} PostgreSQL transactions a batch "
                         f"of {p['units'] / max(p['batches'], 1):,.0f} events (the batch's, the pool's checks, the status "
                         "monitor's); its Redis figures are one EVALSHA a batch, whose script runs SET NX, INCR and EXPIRE "
                         "per changed scope")
        if "served" in args.parts:
            use_uvloop()
            s = served(args, redis_url)
            for key in ("hit", "r304", "pg200", "pg304"):
                f = s[key]
                rows.append(_row(f"API {f['label']} ({f['rps']:,.0f} req/s, {args.concurrency} conns)", "req", f))
    header = ("part", "measured", "its CPU µs/unit", "PG CPU µs/unit", "Redis CPU µs/unit", "per core of it",
              "per PG core", "PG xacts/unit", "PG rows/unit", "Redis commands/unit")
    print()
    print(table(f"python -m bench.capacity{' --quick' if args.quick else ''}: {time.perf_counter() - began:.0f}s on "
                f"{os.cpu_count()} cores", [header, *rows]))
    print("per core = 1e6 / CPU µs per unit: what one core of that part serves when it is the bottleneck")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
