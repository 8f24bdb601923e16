"""Projector events/s end to end (broker → committed rows) versus the ceilings on the same data.

Publishes ``--events`` synthetic thread events (``readside.load.thread_stream``) to fresh topics on
the broker, then measures, on the same machine and the same topic data:

(a) consume alone: aiokafka, manual assignment from offset 0, ``getmany(max_records=5000)`` +
    ``orjson.loads`` of every value — the raw ceiling;
(b) the same + ``readside.schemas.decode`` of every record — the decode ceiling;
(f) fold + render alone: ``threads.fold_all`` and ``render`` over the decoded events, in memory;
(c) the real projector (``readside.projector.service.run_projector(settings, ["threads"])`` in-process,
    default asyncio loop as ``readside projector``) from an empty database until the
    ``checkpoints`` table reaches the high watermarks (read from Fetch responses in (a)).

For (c) the rate is timed from the start of the first batch to the end of the last, so the
consumer-group join (~5 s on the embedded broker) is left out; the wall time with it is printed
too. Batch sizes and times come from a thin subclass of ``ProjectionRunner``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import threading
import time

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition

import readside.projector.service as service
from bench._common import bench_database, bench_settings, kafka, pct, publish_fresh, say, table
from readside.load import thread_stream
from readside.projector.engine import ProjectionRunner
from readside.readmodels.threads.fold import fold_all, render
from readside.schemas import Event, decode

TOPICS = ("threads.events", "payments.events")
EVENTS_PER_THREAD = 25.7  # what thread_stream's default simulation produces on average


async def consume(bootstrap: str, prefix: str, partitions: int, total: int, mode: str) -> tuple[float, dict, list]:
    """Read every record from offset 0; returns (seconds, high watermarks, the raw records if decoding)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=4 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    kept: list[tuple[str, bytes, bytes]] = []
    try:
        tps = [TopicPartition(prefix + t, p) for t in TOPICS for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        count, deadline = 0, time.monotonic() + 300
        began = time.perf_counter()
        while count < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for tp, records in batch.items():
                if mode == "json":
                    for r in records:
                        orjson.loads(r.value)
                else:
                    base = tp.topic[len(prefix):]
                    for r in records:
                        decode(base, r.key, r.value)
                    kept.extend((base, r.key, r.value) for r in records)  # bytes: no GC weight
                count += len(records)
            if time.monotonic() > deadline:
                raise TimeoutError(f"consumed {count} of {total} records in 300 s")
        seconds = time.perf_counter() - began
        heads = {(tp.topic, tp.partition): consumer.highwater(tp) or 0 for tp in tps}
        ends = await consumer.end_offsets(tps)  # under-reported by tansu 0.6: keep the larger
        heads = {k: max(v, ends[TopicPartition(*k)]) for k, v in heads.items()}
        return seconds, heads, kept
    finally:
        await consumer.stop()


class Observed(ProjectionRunner):
    """The engine's runner, recording each batch: (records handed over, start, end)."""

    log: list[tuple[int, float, float]] = []

    async def _process(self, fetched, *args):
        t0 = time.perf_counter()
        try:
            return await super()._process(fetched, *args)
        finally:
            Observed.log.append((sum(len(r) for r in fetched.values()), t0, time.perf_counter()))


def checkpoints(url: str) -> dict[tuple[str, int], int]:
    try:
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT topic, partition, next_offset FROM checkpoints WHERE projection = 'threads'")
            return {(t, p): o for t, p, o in rows}
    except psycopg.errors.UndefinedTable:
        return {}


def run_projector_until(settings, heads: dict, timeout: float) -> float:
    """Run the projector in a thread until the checkpoints reach ``heads``; returns the wall time."""
    service.ProjectionRunner = Observed  # run_projector builds its runners from this name
    loop_box: list = []
    error: list[BaseException] = []

    def main() -> None:
        async def go() -> None:
            stop = asyncio.Event()
            loop_box.append((asyncio.get_running_loop(), stop))
            await service.run_projector(settings, ["threads"], stop=stop)

        try:
            asyncio.run(go())
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            error.append(exc)

    total = sum(heads.values())
    began = time.perf_counter()
    thread = threading.Thread(target=main, name="projector", daemon=True)
    thread.start()
    try:
        last_report, done = began, 0
        while True:
            if error:
                raise RuntimeError("projector failed") from error[0]
            cps = checkpoints(settings.database_url)
            done = sum(min(cps.get(tp, 0), hw) for tp, hw in heads.items())
            if done >= total:
                return time.perf_counter() - began
            now = time.perf_counter()
            if now - last_report >= 2:
                first = Observed.log[0][1] if Observed.log else now
                rate = done / (now - first) if now > first else 0
                say(f"  projector: {done:,}/{total:,} events committed, {len(Observed.log)} batches, ~{rate:,.0f} ev/s")
                last_report = now
            if now - began > timeout:
                raise TimeoutError(f"projector reached {done} of {total} events in {timeout:.0f} s")
            time.sleep(0.1)
    finally:
        if loop_box:
            loop, stop = loop_box[0]
            loop.call_soon_threadsafe(stop.set)
        thread.join(60)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.projector_throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=200_000, help="about this many events (default 200k)")
    p.add_argument("--partitions", type=int, default=3, help="partitions per topic (default 3)")
    p.add_argument("--batch-max", type=int, default=None, help="READSIDE_BATCH_MAX for the projector (default: its own)")
    p.add_argument("--repeat", type=int, default=2, help="runs of (a) and (b), best kept (default 2)")
    p.add_argument("--messages", type=str, default=None, metavar="LOW,HIGH",
                   help="user messages per thread, bounds (default thread_stream's 3,30); longer threads "
                        "make the per-thread cost of the live apply visible")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the projector")
    p.add_argument("--keep", action="store_true", help="keep the database")
    args = p.parse_args(argv)

    began = time.perf_counter()
    if args.messages:
        low, high = (int(x) for x in args.messages.split(","))
        per_thread = 5.4 + 1.31 * (low + high) / 2  # measured: reads, deletes, system messages grow with them
        records = thread_stream(threads=max(1, round(args.events / per_thread)), messages_per_thread=(low, high),
                                seed=args.seed)
    else:
        records = thread_stream(threads=max(1, round(args.events / EVENTS_PER_THREAD)), seed=args.seed)
    say(f"generated {len(records):,} events in {time.perf_counter() - began:.1f}s")
    with kafka() as bootstrap, bench_database(args.keep) as url:
        extra = {"batch_max": args.batch_max} if args.batch_max else {}
        settings = bench_settings(url, bootstrap, **extra)
        prefix = settings.topic_prefix
        began = time.perf_counter()
        sent = publish_fresh(records, bootstrap, prefix, TOPICS, args.partitions)
        publish_s = time.perf_counter() - began
        del records

        say(f"(a) consume + orjson.loads, best of {args.repeat}")
        raw_s, heads, _ = min((asyncio.run(consume(bootstrap, prefix, args.partitions, sent, "json"))
                               for _ in range(args.repeat)), key=lambda r: r[0])
        total = sum(heads.values())
        if total != sent:
            say(f"warning: high watermarks sum to {total}, {sent} were published")
        say(f"(b) consume + readside.schemas.decode, best of {args.repeat}")
        dec_s, _, kept = min((asyncio.run(consume(bootstrap, prefix, args.partitions, sent, "decode"))
                              for _ in range(args.repeat)), key=lambda r: r[0])
        typed = [e for e in (decode(*k) for k in kept) if isinstance(e, Event)]
        gc.collect()
        gc.freeze()  # the input is not part of the fold's cost (the projector never holds it all)
        t0 = time.perf_counter()
        previews = sum(len(render(s)) for s in fold_all(typed).values())
        fold_s = time.perf_counter() - t0
        gc.unfreeze()
        del kept, typed
        gc.collect()

        say(f"(c) projector from an empty database to the high watermarks {heads}")
        wall_s = run_projector_until(settings, heads, args.timeout)
        batches = sorted(Observed.log, key=lambda b: b[1])
        proj_s = batches[-1][2] - batches[0][1]
        with psycopg.connect(url) as conn:
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM thread_previews), (SELECT count(*) FROM thread_messages), "
                "(SELECT count(*) FROM dedupe), (SELECT count(*) FROM dead_letters)").fetchone()

    sizes = sorted(b[0] for b in batches)
    times = sorted((b[2] - b[1]) * 1000 for b in batches)
    raw, dec, fold, proj = total / raw_s, total / dec_s, total / fold_s, total / proj_s
    rows = [("path", "events/s", "seconds", "vs (a)"),
            ("(a) consume + orjson.loads", f"{raw:,.0f}", f"{raw_s:.2f}", "1.00"),
            ("(b) consume + readside.schemas.decode", f"{dec:,.0f}", f"{dec_s:.2f}", f"{dec / raw:.2f}"),
            ("(f) fold_all + render, in memory", f"{fold:,.0f}", f"{fold_s:.2f}", f"{fold / raw:.2f}"),
            ("(c) projector, broker -> committed", f"{proj:,.0f}", f"{proj_s:.2f}", f"{proj / raw:.2f}"),
            ("(c) same, wall incl. start + group join", f"{total / wall_s:,.0f}", f"{wall_s:.2f}", f"{total / wall_s / raw:.2f}"),
            ("publish (producer, for reference)", f"{sent / publish_s:,.0f}", f"{publish_s:.2f}", "")]
    print()
    print(table(f"projector throughput — {total:,} thread events, {len(heads)} partitions, "
                f"batch_max {settings.batch_max}", rows))
    print()
    print(f"batches: {len(batches)}, records per batch mean {sum(sizes) / len(sizes):,.0f} p50 {pct(sizes, 0.5):,} "
          f"max {sizes[-1]:,}; batch time p50 {pct(times, 0.5):.1f} ms p99 {pct(times, 0.99):.1f} ms")
    print(f"rows: thread_previews {counts[0]:,} (pure fold: {previews:,}), thread_messages {counts[1]:,}, "
          f"dedupe {counts[2]:,}, dead_letters {counts[3]}")
    print(f"projector {proj:,.0f} events/s | raw consume {raw:,.0f} events/s | ratio {proj / raw:.3f} "
          f"(ceiling {raw / proj:.1f}x faster) | decode ceiling {dec:,.0f} events/s, ratio {proj / dec:.3f}")
    return 0 if counts[0] == previews and counts[3] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
