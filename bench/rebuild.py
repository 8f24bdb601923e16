"""Rebuild versus live projection on the same topics: events/s of each, their ratio, and the time
to rebuild the whole stream.

Publishes about ``--events`` synthetic thread events (``readside.load.thread_stream``) to fresh
topics, then on the same machine and the same topic data:

(a) consume alone: aiokafka from offset 0 with ``orjson.loads`` of every value — the raw ceiling
    (and the high watermarks the other runs wait for);
(L) live projection: the real projector (``run_projector(settings, ["threads"])``, the engine as
    ``readside projector`` runs it) from an empty database until its checkpoints reach the high
    watermarks; rate from its first batch to its last, so the group join is left out. It is then
    stopped, so the rebuild runs alone, as (L) did;
(R) ``readside rebuild threads --verify`` (``readside.projector.rebuild.Rebuilder``, in-process, what the
    command runs): bulk load from offset 0 into the shadow schema with the threads bulk loader
    (COPY), indexes, catch-up, cutover with ``--verify`` (it reads both versions whole); the rate
    of the bulk phase, and of the whole command from its start to its end;
(W) the same with ``--workers N`` bulk processes (default 2; ``--workers 1`` skips it);
(G) with ``--generic``: the projection's own ``apply`` in the bulk phase (no bulk loader), to
    weigh the COPY path.

Checks (``readside.projector.verify.compare``, what ``--verify`` runs; timed apart): (R)'s tables must
equal the live ones, and each later run's tables the previous run's.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import time
from dataclasses import replace

import psycopg

from bench._common import bench_database, bench_settings, kafka, publish_fresh, say, table
from bench.projector_throughput import TOPICS, Observed, consume, run_projector_until
from readside.load import thread_stream
from readside.projector.rebuild import Options, Rebuilder
from readside.projector.verify import compare
from readside.readmodels.registry import REGISTRY

EVENTS_PER_THREAD = 25.7


def rebuild(settings, projection, options: Options) -> tuple[Rebuilder, float, str]:
    rebuilder = Rebuilder(settings, projection, options)
    began = time.perf_counter()
    line = asyncio.run(rebuilder.rebuild())
    return rebuilder, time.perf_counter() - began, line


async def _same(url: str, left: str, right: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return [d.table for d in await compare(conn, REGISTRY["threads"], left, right) if d.differs]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rebuild", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000, help="about this many events (default 1M)")
    p.add_argument("--partitions", type=int, default=3, help="partitions per topic (default 3)")
    p.add_argument("--bulk-batch", type=int, default=50_000, help="events per bulk transaction (default 50k)")
    p.add_argument("--workers", type=int, default=2, help="also time the rebuild with this many bulk workers (W); 1: skip")
    p.add_argument("--generic", action="store_true", help="also time the rebuild without the bulk loader (G)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the live projector")
    p.add_argument("--keep", action="store_true", help="keep the database")
    args = p.parse_args(argv)

    began = time.perf_counter()
    records = thread_stream(threads=max(1, round(args.events / EVENTS_PER_THREAD)), seed=args.seed)
    say(f"generated {len(records):,} events in {time.perf_counter() - began:.1f}s")
    with kafka() as bootstrap, bench_database(args.keep) as url:
        settings = bench_settings(url, bootstrap)
        prefix = settings.topic_prefix
        sent = publish_fresh(records, bootstrap, prefix, TOPICS, args.partitions)
        del records

        say("(a) consume + orjson.loads")
        raw_s, heads, _ = asyncio.run(consume(bootstrap, prefix, args.partitions, sent, "json"))
        total = sum(heads.values())

        say(f"(L) live projector from an empty database to {total:,} events")
        live_wall = run_projector_until(settings, heads, args.timeout)
        batches = sorted(Observed.log, key=lambda b: b[1])
        live_s = batches[-1][2] - batches[0][1]

        runs: list[tuple[str, Rebuilder, float]] = []
        variants = [("(R)", "COPY bulk loader, 1 process", REGISTRY["threads"], 1, True)]
        if args.workers > 1:
            variants.append(("(W)", f"COPY bulk loader, --workers {args.workers}", REGISTRY["threads"], args.workers, False))
        if args.generic:
            variants.append(("(G)", "the projection's own apply, 1 process", replace(REGISTRY["threads"], bulk=None), 1, False))
        verify_s = 0.0
        for i, (label, what, projection, workers, verify) in enumerate(variants):
            if i:
                asyncio.run(Rebuilder(settings, REGISTRY["threads"], Options(stream=io.StringIO())).drop_previous())
            say(f"{label} readside rebuild threads: {what}")
            options = Options(bulk_batch=args.bulk_batch, workers=workers, stream=sys.stderr)
            rebuilder, wall, line = rebuild(settings, projection, options)
            say(line)
            runs.append((f"{label} {what}", rebuilder, wall))
            t0 = time.perf_counter()
            differ = asyncio.run(_same(url, "rs_prev_threads", "public"))
            if verify:
                verify_s = time.perf_counter() - t0
            if differ:
                say(f"{label} differs from the {'live tables' if not i else 'previous rebuild'} in {differ}")
                return 1

    live = total / live_s
    raw = total / raw_s
    rows = [("path", "events/s", "seconds", "vs live"),
            ("(a) consume + orjson.loads (ceiling)", f"{raw:,.0f}", f"{raw_s:.1f}", f"{raw / live:.2f}"),
            ("(L) live projector, broker -> committed", f"{live:,.0f}", f"{live_s:.1f}", "1.00"),
            ("(L) same, wall incl. start + group join", f"{total / live_wall:,.0f}", f"{live_wall:.1f}", "")]

    for label, rebuilder, wall in runs:
        t, e = rebuilder.timings, rebuilder.events
        bulk = e.get("bulk", 0) / t["bulk"]
        rows.append((f"{label}: bulk phase", f"{bulk:,.0f}", f"{t['bulk']:.1f}", f"{bulk / live:.2f}"))
        rows.append((f"{label}: whole command", f"{total / wall:,.0f}", f"{wall:.1f}", f"{total / wall / live:.2f}"))
        say(f"{label} phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in t.items()))
    best_label, best, best_wall = min(runs, key=lambda r: r[2])
    print()
    print(table(f"rebuild vs live projection — {total:,} thread events, {len(heads)} partitions, "
                f"bulk batch {args.bulk_batch:,}", rows))
    print()
    t = best.timings
    rate = total / best_wall
    print(f"rebuild {rate:,.0f} events/s ({best_label}) | live {live:,.0f} events/s | ratio {rate / live:.2f} | "
          f"rebuild of {total:,} events: {best_wall:.1f} s (bulk {t['bulk']:.1f} s, indexes {t['index']:.1f} s, "
          f"catch-up {t['catch-up']:.1f} s, cutover {t['cutover']:.1f} s) | live from empty: {live_s:.1f} s | "
          f"(R) equals the live tables (compare: {verify_s:.1f} s, what --verify adds to a cutover)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
