"""Writing replayed events into shadow tables, and the bulk phase's worker processes.

``ShadowWriter.write`` applies one chunk in the caller's transaction: dedupe by ``event_id``
against ``rs_seen`` (first wins), the projection's write (its bulk loader in the bulk phase, its
``apply`` otherwise; a write that fails for the events' sake — ``readside.shared.errors.record_fault``, as
the live engine classifies it — is bisected down to the failing events, which are kept in
``rs_failed`` as the live engine dead-letters them; the database being down propagates), and the
new positions in ``rs_checkpoints`` —
rows and positions commit together, so a build resumes exactly where its last commit left it.

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
from typing import Awaitable, Callable

import orjson
import psycopg

from readside.readmodels.base import Projection
from readside.projector.replay import Chunk, Item, Replay
from readside.projector.shadow import Shadow
from readside.schemas.envelope import clean_reason
from readside.shared.errors import ReadsideError, record_fault
from readside.shared.settings import Settings

__all__ = ["ShadowWriter", "load", "run_workers"]

Key = tuple[str, int]


class ShadowWriter:
    def __init__(self, conn: psycopg.AsyncConnection, projection: Projection, shadow: Shadow) -> None:
        self.conn = conn
        self.projection = projection
        self.shadow = shadow

    async def write(self, chunk: Chunk, *, bulk: bool) -> None:
        """In the caller's transaction: dedupe, apply and positions of ``chunk``."""
        conn = self.conn
        await conn.execute(f'SET LOCAL search_path = "{self.shadow.schema}"')
        first: dict[str, Item] = {}
        for item in chunk.events:
            first.setdefault(item.event.event_id, item)
        fresh = await self.shadow.first_seen(conn, list(first))
        items = [item for event_id, item in first.items() if event_id in fresh]
        failures = await self._apply_isolating(items, bulk)
        # A failed event is not "seen": a re-send of it, or a replay after a fix, must still apply.
        await self.shadow.forget_seen(conn, [i.event.event_id for i, _ in failures])
        await self.shadow.record_failures(
            conn,
            [(i.tp.topic, i.tp.partition, i.offset, i.key, i.value, reason) for i, reason in failures]
            + [(tp.topic, tp.partition, offset, key, value, reason) for tp, offset, key, value, reason in chunk.rejected],
        )
        await self.shadow.set_positions(conn, {(tp.topic, tp.partition): end for tp, end in chunk.ends.items()})
        await conn.execute("SET LOCAL search_path = public")

    async def _apply_isolating(self, items: list[Item], bulk: bool) -> list[tuple[Item, str]]:
        if not items:
            return []
        try:
            async with self.conn.transaction():  # a savepoint
                events = [i.event for i in items]
                if bulk and self.projection.bulk is not None:
                    await self.projection.bulk.apply(self.conn, events)
                else:
                    await self.projection.apply(self.conn, events)
            return []
        except Exception as exc:  # noqa: BLE001 - the events' fault is isolated below
            if not record_fault(exc):
                raise
            if len(items) == 1:
                return [(items[0], clean_reason(f"fold error (rebuild): {exc!r}"))]
            mid = len(items) // 2
            return await self._apply_isolating(items[:mid], bulk) + await self._apply_isolating(items[mid:], bulk)


async def load(
    replay: Replay,
    writer: ShadowWriter,
    chunk_size: int,
    after: Callable[[Chunk], Awaitable[None]],
) -> None:
    """Read below the replay's limits and write, one transaction per chunk, the next chunk read
    and decoded while the previous one is written; ``after(chunk)`` once each has committed."""
    queue: asyncio.Queue[Chunk | BaseException | None] = asyncio.Queue(maxsize=1)

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

        async def after(chunk: Chunk) -> None:
            nonlocal done
            if os.getppid() != parent:
                raise SystemExit("the rebuild command is gone; stopping this worker")
            done += chunk.records
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
