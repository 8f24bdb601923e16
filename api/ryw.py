"""Read-your-writes waits (``X-Readside-After``): one shared watcher per API process.

A request naming positions ``(topic, partition, offset)`` is answered once the endpoint's
projection has committed past each of them (its checkpoint's ``next_offset`` is above the
offset), or after ``timeout``. The checkpoints read are that projection's own
(``checkpoints.projection``): read models sharing a topic advance separately, and one that is
ahead never answers for another. What a waiting request costs is bounded, whoever sends it:

- **One poll for all waiters.** While anyone waits, one task per process reads the checkpoints
  and recorded heads of every partition waited on, in one query, at most every ``POLL`` seconds,
  and releases the waiters it satisfies. Database work does not grow with the number of waiters
  (before: a query every 20 ms per waiting request).
- **Positions clamped to the partition's head.** A position at or past the head the projector
  last recorded (``partition_heads``) may be a record it has not fetched yet, or one that does
  not exist. For those the broker's high watermark is read (one reading in flight per process,
  started after the waiter arrived), and the position is clamped to it: the request then waits
  for everything published so far, no more. A made-up offset (``…:0:999999999``) is answered
  once the projection has caught up with the partition, usually at once.
- **A cap on waiters.** At most ``max_waiters`` requests wait at once per process; one more is
  not made to wait: it is answered at once, labelled ``timeout`` (not confirmed), like a wait that
  ran out.
- **A WAL position for read replicas** (``wal=True``, only with replicas configured): the poll also
  reads, per awaited position, a WAL position past the commit that applied it (its checkpoint's
  ``wal_lsn`` when the offset is below ``wal_covers``, else the primary's insert position read by
  the poll); :meth:`Watcher.wait_wal` returns the highest, and ``api/replicas.py`` answers from a
  replica only once it has replayed that far (why this position, and not one read inside the
  projector's transaction: ``api/replicas.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from readside.shared.kafka import BrokerHeads, BrokerUnavailable

__all__ = ["POLL", "Watcher"]

log = logging.getLogger(__name__)

POLL = 0.02  # seconds between two checks while anyone waits
MAX_REMEMBERED = 10_000  # broker heads kept (partitions named by requests, existing or not)

Position = tuple[str, int, int]  # topic, partition, offset

_CHECK_SQL = (
    "SELECT w.projection, w.topic, w.part, c.next_offset, h.high_watermark "
    "FROM unnest(%b::text[], %b::text[], %b::int4[]) AS w(projection, topic, part) "
    "LEFT JOIN checkpoints c ON c.projection = w.projection AND c.topic = w.topic AND c.partition = w.part "
    "LEFT JOIN partition_heads h ON h.topic = w.topic AND h.partition = w.part"
)
# The same with the WAL positions (in bytes) for read replicas. pg_current_wal_insert_lsn() runs
# after the statement took its snapshot: past the commit record of every commit the snapshot shows.
_CHECK_WAL_SQL = _CHECK_SQL.replace(
    " FROM unnest",
    ", c.wal_covers, (c.wal_lsn - '0/0'::pg_lsn)::int8, (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8 FROM unnest",
    1,
)


@dataclass(eq=False)
class _Waiter:
    projection: str
    positions: list[Position]
    since: float = field(default_factory=time.monotonic)
    wal: int | None = None  # with ``wal``: a WAL position past every commit that applied the positions
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Watcher:
    def __init__(self, pool: AsyncConnectionPool, heads: BrokerHeads | None, max_waiters: int,
                 poll: float = POLL, metrics: Any = None, wal: bool = False) -> None:
        self.pool = pool
        self.wal = wal  # read WAL positions for read replicas (api/replicas.py)
        self.metrics = metrics  # readside.api.metrics.ApiMetrics: ``readside_ryw_waiting`` and ``readside_ryw_checks_total``
        self.heads = heads
        self.max_waiters = max_waiters
        self.poll = poll
        self.checks = 0  # queries run (tests and metrics read it)
        self._waiters: set[_Waiter] = set()
        self._task: asyncio.Task[None] | None = None
        self._reading: asyncio.Task[None] | None = None
        self._broker_heads: dict[tuple[str, int], tuple[int, float]] = {}  # -> (head, reading's start)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def wait(self, projection: str, positions: list[Position], timeout: float) -> bool:
        """True once ``projection`` has committed past every position; False after ``timeout``,
        or at once when ``max_waiters`` requests already wait."""
        return (await self.wait_wal(projection, positions, timeout))[0]

    async def wait_wal(self, projection: str, positions: list[Position], timeout: float) -> tuple[bool, int | None]:
        """``wait``, and with ``wal`` a WAL position past the commits that applied the positions
        (None without ``wal``, or when the wait was not satisfied)."""
        if len(self._waiters) >= self.max_waiters:
            return False, None
        waiter = _Waiter(projection, positions)
        self._waiters.add(waiter)
        if self.metrics is not None:
            self.metrics.ryw_waiting.inc()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="readside-ryw")
        try:
            await asyncio.wait_for(asyncio.shield(waiter.done), timeout)
            return True, waiter.wal
        except TimeoutError:
            return False, None
        finally:
            self._waiters.discard(waiter)
            if self.metrics is not None:
                self.metrics.ryw_waiting.dec()

    async def close(self) -> None:
        for task in (self._task, self._reading):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    # -- the shared poll -----------------------------------------------------------------------
    async def _run(self) -> None:
        while self._waiters:
            try:
                await self._check()
            except (psycopg.Error, PoolTimeout) as exc:  # waiters run out their time; we go on
                log.warning("read-your-writes: checkpoints not read: %s", exc)
            if self._waiters:
                await asyncio.sleep(self.poll)

    async def _check(self) -> None:
        waiters = [w for w in self._waiters if not w.done.done()]
        keys = sorted({(w.projection, t, p) for w in waiters for t, p, _ in w.positions})
        if not keys:
            return
        self.checks += 1
        if self.metrics is not None:
            self.metrics.ryw_checks.inc()
        async with self.pool.connection() as conn:
            cur = await conn.execute(_CHECK_WAL_SQL if self.wal else _CHECK_SQL,
                                     ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]))
            rows = await cur.fetchall()
        committed = {(proj, t, p): nxt or 0 for proj, t, p, nxt, *_ in rows}
        recorded = {(row[1], row[2]): row[4] for row in rows}
        # with ``wal``: (offsets covered, their WAL position) per checkpoint, and the poll's own position
        covered = {(row[0], row[1], row[2]): (row[5] or 0, row[6]) for row in rows} if self.wal else {}
        now_wal = max((row[7] for row in rows), default=None) if self.wal else None
        unknown: dict[tuple[str, int], int] = {}  # past the recorded head, no broker reading since
        for w in waiters:
            pending = False
            wal: int | None = None
            for topic, part, offset in w.positions:
                target = offset
                read = self._broker_heads.get((topic, part))
                if read is not None and read[1] >= w.since:
                    target = min(offset, read[0] - 1)  # clamped to the head at a moment after arrival
                if committed[(w.projection, topic, part)] > target:
                    if self.wal:
                        covers, lsn = covered[(w.projection, topic, part)]
                        at = lsn if target < covers and lsn is not None else now_wal
                        wal = -1 if at is None or wal == -1 else max(at, wal or 0)  # -1: unknown
                    continue
                pending = True
                head = recorded.get((topic, part))
                if (read is None or read[1] < w.since) and (head is None or offset >= head):
                    unknown[(topic, part)] = max(offset, unknown.get((topic, part), 0))
            if not pending:
                w.wal = None if wal == -1 else wal
                w.done.set_result(None)
        if unknown and self.heads is not None and (self._reading is None or self._reading.done()):
            self._reading = asyncio.create_task(self._read_heads(unknown), name="readside-ryw-heads")

    async def _read_heads(self, positions: dict[tuple[str, int], int]) -> None:
        started = time.monotonic()
        try:
            heads = await self.heads.read(sorted({t for t, _ in positions}), positions)  # type: ignore[union-attr]
        except BrokerUnavailable as exc:
            log.info("read-your-writes: broker heads not read (%s); positions past the recorded head wait", exc)
            return
        except Exception:
            log.exception("read-your-writes: reading the broker's heads failed")
            return
        if len(self._broker_heads) > MAX_REMEMBERED:
            self._broker_heads.clear()
        for key in positions:
            # A partition missing from the answer may be one the broker did not answer for in time:
            # its head stays unknown, so the waiter waits (a made-up partition costs one bounded
            # wait) rather than hearing "caught-up" before a write that may be there.
            head = heads.get(key)
            if head is not None:
                self._broker_heads[key] = (head.high_watermark, started)

