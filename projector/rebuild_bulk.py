"""Writing replayed events into shadow tables, and the bulk phase's worker processes.

``ShadowWriter.write`` runs one chunk through the write pipeline (``readside.projector.pipeline``)
in the caller's transaction, with the shadow schema as its store: dedupe by ``event_id`` against
``rs_seen`` (first wins), the projection's write (its bulk loader in the bulk phase, its
``apply`` otherwise; poison is isolated as the live engine isolates it and kept in ``rs_failed``
with the records today's decoder rejects, its reason ``"fold error (rebuild): ..."``), and the new
positions in ``rs_checkpoints`` — rows and positions commit together, so a build resumes exactly
where its last commit left it.

``load`` runs the bulk phase over a set of partitions: a reader task fetches and decodes the next
chunk while the previous one is written (decoding is CPU, writing mostly waits for PostgreSQL).

Workers: ``readside rebuild --workers N`` runs ``python -m readside.projector.rebuild_bulk`` N
times, each with its own broker connection, database connection and transactions. The work is
split by record key (CRC-32 of the key modulo N; a record without a key is worker 0's): every
worker reads every partition but decodes and writes only the records whose key it owns, so the
shares are even whatever the number of partitions (a split by partition leaves one of two
workers with two thirds of three partitions). A key is an aggregate's id (the decoder rejects a
record whose key differs from its payload's), so one worker holds all of an aggregate's events,
in offset order. Each worker keeps its own positions in ``rs_bulk_positions`` (``worker``,
``topic``, ``partition``), committed with its rows; when every worker has reached the targets
they become ``rs_checkpoints`` and the table is dropped. A bulk phase interrupted meanwhile
resumes with the same number of workers (the split must not change under the saved positions).
Their writes are safe together: ``apply`` and the bulk loaders lock the aggregate rows they
load, in key order (ARCHITECTURE invariant 5), and ``rs_seen`` is written in ``event_id``
order. A worker exits when its parent dies.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Awaitable, Callable

import orjson
import psycopg
from psycopg import sql

from readside.projector.pipeline import Batch, BulkRecord, Pipeline, Record
from readside.projector.replay import Replay
from readside.projector.shadow import Shadow
from readside.readmodels.base import Projection
from readside.shared.errors import ReadsideError
from readside.shared.settings import Settings

__all__ = ["ShadowStore", "ShadowWriter", "load", "run_workers", "split_pending", "split_positions"]

Key = tuple[str, int]
SPLIT = "rs_bulk_positions"  # each worker's positions while the workers run
GC_EVERY = 10  # chunks between two collections of cyclic garbage in the bulk phase


def owner(key: bytes | None, workers: int) -> int:
    """The worker that owns a record's key (stable across runs and processes)."""
    return 0 if key is None else zlib.crc32(key) % workers


class ShadowStore:
    """A shadow schema as the pipeline's store: ``rs_checkpoints``, ``rs_seen``, ``rs_failed``."""

    def __init__(self, shadow: Shadow) -> None:
        self.shadow = shadow

    async def record_positions(self, conn: psycopg.AsyncConnection, batch: Batch) -> None:
        await self.shadow.set_positions(conn, {(k[0], k[1]): end for k, end in batch.ends.items()})

    async def first_seen(self, conn: psycopg.AsyncConnection, event_ids: list[str]) -> set[str]:
        return await self.shadow.first_seen(conn, event_ids)

    async def forget_seen(self, conn: psycopg.AsyncConnection, event_ids: list[str]) -> None:
        await self.shadow.forget_seen(conn, event_ids)

    async def record_failures(self, conn: psycopg.AsyncConnection, failures: list[tuple[Record, str]]) -> None:
        await self.shadow.record_failures(conn, [(r.topic, r.partition, r.offset, r.key, r.value, reason) for r, reason in failures])

    async def finish(self, conn: psycopg.AsyncConnection, batch: Batch) -> None:
        pass


class WorkerStore(ShadowStore):
    """A bulk worker's store: its positions are its own rows of ``rs_bulk_positions``."""

    def __init__(self, shadow: Shadow, worker: int) -> None:
        super().__init__(shadow)
        self.worker = worker

    async def record_positions(self, conn: psycopg.AsyncConnection, batch: Batch) -> None:
        keys = sorted((k[0], k[1]) for k in batch.ends)
        await conn.execute(
            sql.SQL(
                "UPDATE {} s SET next_offset = u.o FROM unnest(%s::text[], %s::int4[], %s::int8[]) AS u(t, p, o) "
                "WHERE s.worker = %s AND s.topic = u.t AND s.partition = u.p"
            ).format(self.shadow.table(SPLIT)),
            ([t for t, _ in keys], [p for _, p in keys], [batch.ends[k] for k in keys], self.worker),
        )


class ShadowWriter:
    def __init__(
        self, conn: psycopg.AsyncConnection, projection: Projection, shadow: Shadow, store: ShadowStore | None = None
    ) -> None:
        self.conn = conn
        self.projection = projection
        self.shadow = shadow
        store = store or ShadowStore(shadow)
        bulk = projection.bulk
        loader = projection.apply if bulk is None else bulk.cached() if bulk.cached is not None else bulk.apply
        self._bulk = Pipeline(store, loader, fold_error="fold error (rebuild)")
        self._live = Pipeline(store, projection.apply, fold_error="fold error (rebuild)")

    async def write(self, chunk: Batch, *, bulk: bool) -> None:
        """In the caller's transaction: dedupe, apply and positions of ``chunk``."""
        await self.conn.execute(f'SET LOCAL search_path = "{self.shadow.schema}"')
        await (self._bulk if bulk else self._live).write(self.conn, chunk)
        await self.conn.execute("SET LOCAL search_path = public")


async def load(
    replay: Replay,
    writer: ShadowWriter,
    chunk_size: int,
    after: Callable[[Batch], Awaitable[None]],
) -> None:
    """Read below the replay's limits and write, one transaction per chunk, the next chunk read
    and decoded while the previous one is written; ``after(chunk)`` once each has committed.

    The cyclic garbage collector is paused meanwhile and run every :data:`GC_EVERY` chunks
    instead (reference counting frees the chunks; cycles are rare): the heap holds chunks of
    decoded events and the cached aggregates, and the automatic collections, triggered every few
    hundred allocations, walked them over and over (half the cost of decoding, measured). The
    records read meanwhile are ``BulkRecord``s (cheaper to build than frozen ``Record``s)."""
    queue: asyncio.Queue[Batch | BaseException | None] = asyncio.Queue(maxsize=1)

    async def read() -> None:
        try:
            while replay.remaining() > 0:
                await queue.put(await replay.chunk(chunk_size))
            await queue.put(None)
        except Exception as exc:  # noqa: BLE001 - handed to the writer, which raises it
            await queue.put(exc)

    paused = gc.isenabled()
    gc.disable()
    make, replay.make = replay.make, BulkRecord  # type: ignore[assignment]
    reader = asyncio.create_task(read())
    try:
        written = 0
        while (chunk := await queue.get()) is not None:
            if isinstance(chunk, BaseException):
                raise chunk
            async with writer.conn.transaction():
                await writer.write(chunk, bulk=True)
            await after(chunk)
            del chunk  # garbage once written: not kept while the next one is awaited
            written += 1
            if written % GC_EVERY == 0:
                gc.collect()
        await reader
    finally:
        if not reader.done():
            reader.cancel()
        replay.make = make
        if paused:
            gc.enable()


def _die_with_parent(parent: int) -> None:
    """Linux: SIGTERM this worker when the rebuild command dies (even by ``kill -9``), so a resumed
    rebuild never races an orphan. Elsewhere the check after each chunk does it, later."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        raise SystemExit("the rebuild command is gone; not starting")


async def _split_rows(conn: psycopg.AsyncConnection, shadow: Shadow) -> list[tuple[int, int, str, int, int]]:
    cur = await conn.execute(
        sql.SQL("SELECT workers, worker, topic, partition, next_offset FROM {}").format(shadow.table(SPLIT))
    )
    return await cur.fetchall()


async def start_split(conn: psycopg.AsyncConnection, shadow: Shadow, positions: dict[Key, int], workers: int) -> int:
    """Each worker's positions, from ``positions`` — or those an interrupted bulk phase left, and
    then its number of workers, which is returned."""
    await conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (workers int4 NOT NULL, worker int4 NOT NULL, topic text COLLATE \"C\" NOT NULL, "
            "partition int4 NOT NULL, next_offset int8 NOT NULL, PRIMARY KEY (worker, topic, partition))"
        ).format(shadow.table(SPLIT))
    )
    rows = await _split_rows(conn, shadow)
    if rows:
        workers = rows[0][0]
    have = {(w, t, p) for _, w, t, p, _ in rows}
    missing = [(workers, w, t, p, o) for w in range(workers) for (t, p), o in sorted(positions.items()) if (w, t, p) not in have]
    if missing:  # a first start, or partitions added since
        await conn.cursor().executemany(
            sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s)").format(shadow.table(SPLIT)), missing
        )
    return workers


async def split_pending(conn: psycopg.AsyncConnection, shadow: Shadow) -> bool:
    """Whether workers were interrupted in the bulk phase (their positions are still kept)."""
    cur = await conn.execute("SELECT to_regclass(%s)", (f'"{shadow.schema}"."{SPLIT}"',))
    row = await cur.fetchone()
    return row is not None and row[0] is not None


async def split_positions(conn: psycopg.AsyncConnection, shadow: Shadow) -> dict[Key, int]:
    """Progress of the workers: per partition, the mean of their positions."""
    total: dict[Key, list[int]] = {}
    for _, _, t, p, o in await _split_rows(conn, shadow):
        total.setdefault((t, p), []).append(o)
    return {k: sum(v) // len(v) for k, v in total.items()}


async def finish_split(conn: psycopg.AsyncConnection, shadow: Shadow) -> None:
    """Every worker is done: the least of their positions (all equal) become the shadow's."""
    least: dict[Key, int] = {}
    for _, _, t, p, o in await _split_rows(conn, shadow):
        least[(t, p)] = min(least.get((t, p), o), o)
    async with conn.transaction():
        await shadow.set_positions(conn, least)
        await conn.execute(sql.SQL("DROP TABLE {}").format(shadow.table(SPLIT)))


async def run_workers(
    settings: Settings,
    name: str,
    conn: psycopg.AsyncConnection,
    shadow: Shadow,
    positions: dict[Key, int],
    targets: dict[Key, int],
    workers: int,
    chunk_size: int,
    max_rate: float | None,
    poll: Callable[[], Awaitable[None]],
) -> int:
    """The bulk phase in ``workers`` processes, split by key; ``poll()`` twice a second meanwhile.
    Raises if a worker fails (the others are stopped). Returns the number of workers run."""
    workers = await start_split(conn, shadow, positions, workers)
    env = {**os.environ, **settings.to_env()}
    procs = [
        subprocess.Popen(
            _worker_argv(name, shadow.schema, (i, workers), targets, chunk_size * workers, max_rate),
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=tempfile.TemporaryFile(),
        )
        for i in range(workers)
    ]
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.returncode not in (None, 0)]
            if failed:
                raise ReadsideError(f"a rebuild worker failed: {_tail(failed[0])}")
            await asyncio.sleep(0.5)
            await poll()
        failed = [p for p in procs if p.returncode != 0]
        if failed:
            raise ReadsideError(f"a rebuild worker failed: {_tail(failed[0])}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(30)
    await finish_split(conn, shadow)
    return workers


def _tail(proc: subprocess.Popen) -> str:
    err = ""
    if proc.stderr is not None:
        proc.stderr.seek(0)
        err = proc.stderr.read().decode(errors="replace").strip()
    return err.splitlines()[-1] if err else f"exit code {proc.returncode}"


def _worker_argv(name: str, schema: str, split: tuple[int, int], limits: dict[Key, int], chunk_size: int,
                max_rate: float | None) -> list[str]:
    spec = {
        "projection": name,
        "schema": schema,
        "split": list(split),
        "limits": [[t, p, o] for (t, p), o in sorted(limits.items())],
        "chunk": chunk_size,
        "max_rate": max_rate,  # every worker reads every record: each at the whole rate
        "parent": os.getpid(),
    }
    return [sys.executable, "-m", "readside.projector.rebuild_bulk", orjson.dumps(spec).decode()]


async def _worker(spec: dict) -> None:
    from aiokafka import TopicPartition

    from readside.readmodels.registry import REGISTRY

    settings = Settings.from_env()
    projection = REGISTRY[spec["projection"]]
    gc.collect()
    gc.freeze()  # what the imports left lives as long as the process: no collection walks it again
    parent = spec["parent"]
    _die_with_parent(parent)
    shadow = Shadow(projection, spec["schema"])
    limits = {TopicPartition(t, p): o for t, p, o in spec["limits"]}
    worker, workers = spec["split"]
    replay = Replay(settings, projection)
    replay.owns = lambda key: owner(key, workers) == worker
    conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True, options="-c TimeZone=UTC")
    try:
        await conn.execute("SET synchronous_commit = off")
        await replay.start()
        positions = {(t, p): o for _, w, t, p, o in await _split_rows(conn, shadow) if w == worker}
        await replay.seek({tp: positions.get((tp.topic, tp.partition), 0) for tp in limits})
        replay.set_limits(limits)
        loop = asyncio.get_running_loop()
        began, done = loop.time(), 0

        async def after(chunk: Batch) -> None:
            nonlocal done
            if os.getppid() != parent:
                raise SystemExit("the rebuild command is gone; stopping this worker")
            done += chunk.read
            if spec["max_rate"]:
                ahead = began + done / spec["max_rate"] - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)

        await load(replay, ShadowWriter(conn, projection, shadow, WorkerStore(shadow, worker)), spec["chunk"], after)
    finally:
        await replay.stop()
        await conn.close()


if __name__ == "__main__":
    asyncio.run(_worker(orjson.loads(sys.argv[1])))
