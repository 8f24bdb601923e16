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

Workers: ``readside rebuild --workers N`` splits the partitions by partition number into N
groups and runs ``python -m readside.projector.rebuild_bulk`` once per group, each with its own broker
connection, database connection and transactions — the way N live projector instances share a
consumer group. Their writes are safe together for the same reason: ``apply`` and the bulk
loaders lock the aggregate rows they load, in key order (ARCHITECTURE invariant 5), and
``rs_seen`` is written in ``event_id`` order. A worker exits when its parent dies.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable

import orjson
import psycopg

from readside.projector.pipeline import Batch, Pipeline, Record
from readside.projector.replay import Replay
from readside.projector.shadow import Shadow
from readside.readmodels.base import Projection
from readside.shared.errors import ReadsideError
from readside.shared.settings import Settings

__all__ = ["ShadowStore", "ShadowWriter", "load", "run_workers"]

Key = tuple[str, int]


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


class ShadowWriter:
    def __init__(self, conn: psycopg.AsyncConnection, projection: Projection, shadow: Shadow) -> None:
        self.conn = conn
        self.projection = projection
        self.shadow = shadow
        store = ShadowStore(shadow)
        loader = projection.bulk.apply if projection.bulk is not None else projection.apply
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
    and decoded while the previous one is written; ``after(chunk)`` once each has committed."""
    queue: asyncio.Queue[Batch | BaseException | None] = asyncio.Queue(maxsize=1)

    async def read() -> None:
        try:
            while replay.remaining() > 0:
                await queue.put(await replay.chunk(chunk_size))
            await queue.put(None)
        except Exception as exc:  # noqa: BLE001 - handed to the writer, which raises it
            await queue.put(exc)

    reader = asyncio.create_task(read())
    try:
        while (chunk := await queue.get()) is not None:
            if isinstance(chunk, BaseException):
                raise chunk
            async with writer.conn.transaction():
                await writer.write(chunk, bulk=True)
            await after(chunk)
        await reader
    finally:
        if not reader.done():
            reader.cancel()


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


async def run_workers(
    settings: Settings,
    name: str,
    schema: str,
    positions: dict[Key, int],
    targets: dict[Key, int],
    workers: int,
    chunk_size: int,
    max_rate: float | None,
    poll: Callable[[], Awaitable[None]],
) -> None:
    """The bulk phase in ``workers`` processes; ``poll()`` twice a second meanwhile. Partitions
    are split by partition number (a key's partitions in the projection's topics share a number
    when the topics have as many partitions), each number to the least loaded worker so far,
    largest first. Raises if a worker fails (the others are stopped)."""
    work: dict[int, int] = {}
    for (topic, partition), position in positions.items():
        work[partition] = work.get(partition, 0) + max(targets[(topic, partition)] - position, 0)
    loads = [0] * workers
    owner: dict[int, int] = {}
    for partition in sorted(work, key=lambda p: (-work[p], p)):
        owner[partition] = loads.index(min(loads))
        loads[owner[partition]] += work[partition]
    groups: dict[int, list[Key]] = {}
    for key in sorted(positions):
        groups.setdefault(owner[key[1]], []).append(key)
    rate = max_rate / len(groups) if max_rate else None
    env = {**os.environ, **settings.to_env()}
    procs = [
        subprocess.Popen(
            _worker_argv(name, schema, keys, targets, chunk_size, rate),
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=tempfile.TemporaryFile(),
        )
        for keys in groups.values()
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


def _tail(proc: subprocess.Popen) -> str:
    err = ""
    if proc.stderr is not None:
        proc.stderr.seek(0)
        err = proc.stderr.read().decode(errors="replace").strip()
    return err.splitlines()[-1] if err else f"exit code {proc.returncode}"


def _worker_argv(name: str, schema: str, partitions: list[Key], limits: dict[Key, int], chunk_size: int,
                max_rate: float | None) -> list[str]:
    spec = {
        "projection": name,
        "schema": schema,
        "limits": [[t, p, limits[(t, p)]] for t, p in partitions],
        "chunk": chunk_size,
        "max_rate": max_rate,
        "parent": os.getpid(),
    }
    return [sys.executable, "-m", "readside.projector.rebuild_bulk", orjson.dumps(spec).decode()]


async def _worker(spec: dict) -> None:
    from aiokafka import TopicPartition

    from readside.readmodels.registry import REGISTRY

    settings = Settings.from_env()
    projection = REGISTRY[spec["projection"]]
    parent = spec["parent"]
    _die_with_parent(parent)
    shadow = Shadow(projection, spec["schema"])
    limits = {TopicPartition(t, p): o for t, p, o in spec["limits"]}
    replay = Replay(settings, projection)
    conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True, options="-c TimeZone=UTC")
    try:
        await conn.execute("SET synchronous_commit = off")
        await replay.start()
        positions = await shadow.positions(conn)
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

        await load(replay, ShadowWriter(conn, projection, shadow), spec["chunk"], after)
    finally:
        await replay.stop()
        await conn.close()


if __name__ == "__main__":
    asyncio.run(_worker(orjson.loads(sys.argv[1])))
