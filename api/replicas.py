"""Read replicas: PostgreSQL streaming replicas that answer some of the API's reads.

``READSIDE_DATABASE_REPLICA_URLS`` names them; without it nothing here runs and every read goes to
the primary (``READSIDE_DATABASE_URL``), as before. The projector and the operator commands never
read these settings: they write to and read the primary.

**What a replica answers.** The PostgreSQL path of a list endpoint (``api/serving.py``): the version
(304) and the body of a request without ``X-Readside-After`` that the Redis cache does not answer
(no Redis configured, Redis down, a scope Redis holds no version for), and of a read-your-writes
request whose wait ended, once a replica has replayed what it waited for (below). Both statements
of one answer (the version for ``If-None-Match``, then the body) run on one server, so an ETag
always names the version of the rows its body came from: a lagging replica answers an older
version under that older version's ETag, never a newer one. A request whose ``If-None-Match``
holds an ETag this API issued for a newer version than the replica holds (the client has seen
newer rows, e.g. from a read-your-writes answer) is answered by the primary instead: a client
that sends its ETag never goes back in time. What stays on the primary: the
read-your-writes poll, the lag header, the Redis cache's renders (a body stored under a Redis
version must hold at least that version's rows, and a replica cannot show it does: the version is
bumped after the primary's commit, with no WAL position), and the other endpoints.

**Which replica.** Round robin over the usable ones. A probe every ``PROBE`` seconds (one task per
process) reads each replica's replay position (``pg_last_wal_replay_lsn()``), after reading the
primary's WAL flush position (``pg_current_wal_flush_lsn()``): a replica that has replayed a mark
of the primary was as fresh as the primary when the mark was read. A replica is usable while its
last probe answered, it is still in recovery (a promoted one is no replica of this primary any
more), and it is at most ``READSIDE_DATABASE_REPLICA_MAX_LAG`` seconds behind the primary (a
replica whose replay is paused, or whose replication stopped, drops out; a plain read on a replica
is at most that much staler than on the primary). A request that fails on a replica (refused,
killed, a statement cancelled by a recovery conflict, no connection within ``CHECKOUT`` seconds)
is answered by the primary, from the start (both statements), and a replica whose connection
failed is skipped for ``DOWN_FOR`` seconds: a replica never causes an error answer.

**Read-your-writes.** The request waits on the primary's checkpoints as before (``api/ryw.py``);
the same poll reads a WAL position that covers the commit it waited for:

- the checkpoint's ``wal_lsn`` when the awaited offset is below its ``wal_covers``: the statement
  that advanced the checkpoint from ``wal_covers`` stored the WAL insert position of that moment,
  which is past the commit record of every earlier batch (``projector/bookkeeping.py``);
- otherwise (the offset is in the latest batch) ``pg_current_wal_insert_lsn()`` read by the poll
  itself: the poll's snapshot already shows that commit, so its record is below that position.

A position read *inside* the batch's transaction would not do: it is below the batch's commit
record, and a replica can replay beyond it (the batch's own row changes, another transaction's
records) without having replayed the commit. Replay is in WAL order and
``pg_last_wal_replay_lsn()`` is the end of the last record replayed, so a replica whose replay
position is at or past the covering position shows the commit to every snapshot it takes; the
answer comes from such a usable replica (dead-letter check and body), else from the primary. A
replica's position only grows, so a reading older than the request only errs towards the primary.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from readside.shared.db import open_pool
from readside.shared.errors import DatabaseUnavailable

__all__ = ["CHECKOUT", "DOWN_FOR", "PROBE", "Replica", "ReplicaBehind", "ReplicaFailed", "Replicas"]

log = logging.getLogger(__name__)

PROBE = 0.2  # seconds between two probes
CHECKOUT = 0.5  # seconds a request waits for a replica's connection before the primary answers
DOWN_FOR = 1.0  # seconds a replica that failed a request is skipped
_PROBE_TIMEOUT = 1.0

_MARK_SQL = "SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::int8"
_PROBE_SQL = "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8"

T = TypeVar("T")


class ReplicaFailed(DatabaseUnavailable):
    """A replica could not answer; the primary does (it never reaches a client)."""


class ReplicaBehind(ReplicaFailed):
    """The replica holds an older version than the client has seen (its ETag): the primary answers."""


@dataclass(eq=False)
class Replica:
    index: int
    url: str
    pool: AsyncConnectionPool | None = None
    replayed: int = -1  # WAL replay position last read; -1: unknown
    fresh_at: float = float("-inf")  # when the primary was at a position this replica has replayed
    answered: bool = False  # the last probe answered, from a server in recovery
    down_until: float = 0.0  # a request failed on it: skipped until then
    probe_conn: psycopg.AsyncConnection | None = None

    @property
    def name(self) -> str:
        return f"replica-{self.index}"

    def usable(self, now: float, max_lag: float) -> bool:
        return self.answered and now >= self.down_until and now - self.fresh_at <= max_lag


class Replicas:
    def __init__(self, urls: tuple[str, ...], primary: AsyncConnectionPool, *, pool_size: int, max_lag: float,
                 probe: float = PROBE, metrics: Any = None) -> None:
        self.replicas = [Replica(i, url) for i, url in enumerate(urls)]
        self.primary = primary
        self.pool_size = pool_size
        self.max_lag = max_lag
        self.probe = probe
        self.metrics = metrics  # readside.api.metrics.ApiMetrics: replica reads and fallbacks
        self._turn = itertools.count()
        self._marks: collections.deque[tuple[float, int]] = collections.deque()  # (monotonic, primary flush lsn)
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        for replica in self.replicas:
            replica.pool = await open_pool(replica.url, min_size=1, max_size=self.pool_size, timeout=CHECKOUT)
        await self.probe_all()  # the first requests may use the replicas already
        self._task = asyncio.create_task(self._run(), name="readside-replicas")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for replica in self.replicas:
            if replica.probe_conn is not None:
                await replica.probe_conn.close()
            if replica.pool is not None:
                await replica.pool.close()

    # -- choosing ------------------------------------------------------------------------------
    def _pick(self, ok: Callable[[Replica], bool]) -> Replica | None:
        now = time.monotonic()
        usable = [r for r in self.replicas if r.usable(now, self.max_lag) and ok(r)]
        return usable[next(self._turn) % len(usable)] if usable else None

    def for_read(self) -> Replica | None:
        """A usable replica for a plain read (round robin), or None: the primary."""
        return self._pick(lambda r: True)

    def replayed_past(self, wal: int | None) -> Replica | None:
        """A usable replica that has replayed the WAL up to ``wal``, or None: the primary."""
        if wal is None:
            return None
        return self._pick(lambda r: r.replayed >= wal)

    # -- reading -------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def connection(self, replica: Replica) -> AsyncIterator[psycopg.AsyncConnection]:
        """A connection of ``replica``; raises :class:`ReplicaFailed` if the replica fails the work
        done with it (any database error: the primary may still answer)."""
        assert replica.pool is not None
        got: psycopg.AsyncConnection | None = None
        try:
            async with replica.pool.connection() as conn:
                got = conn
                yield conn
        except (psycopg.Error, PoolTimeout) as exc:
            if got is None or got.broken or got.closed:  # no connection, or it died: the replica is down
                if time.monotonic() >= replica.down_until:
                    log.warning("%s failed a read (%s); skipped for %.1fs, the primary answers", replica.name, exc, DOWN_FOR)
                replica.down_until = time.monotonic() + DOWN_FOR
            else:  # the statement only, e.g. cancelled by a recovery conflict
                log.info("%s: %s; the primary answers", replica.name, exc)
            raise ReplicaFailed(replica.name) from exc

    async def read(self, replica: Replica | None, timing: Any,
                   work: Callable[[psycopg.AsyncConnection, bool], Awaitable[T]]) -> T:
        """``work(connection, on_a_replica)`` on ``replica``, or on the primary when it is None or
        failed (or ``work`` raised :class:`ReplicaBehind`)."""
        if replica is not None:
            t0 = time.perf_counter()
            try:
                async with self.connection(replica) as conn:
                    result = await work(conn, True)
                if self.metrics is not None:
                    self.metrics.replica_reads.labels(replica.name).inc()
                return result
            except ReplicaFailed:
                if self.metrics is not None:
                    self.metrics.replica_fallbacks.labels(replica.name).inc()
            finally:
                timing.db += time.perf_counter() - t0
        async with timing.connection(self.primary) as conn:
            return await work(conn, False)

    # -- the probe -----------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.probe)
            try:
                await self.probe_all()
            except Exception:  # the probe must go on
                log.exception("replica probe failed")

    async def probe_all(self) -> None:
        # The primary's mark first: a replica found past it was at least that fresh then.
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT):
                async with self.primary.connection() as conn:
                    row = await (await conn.execute(_MARK_SQL)).fetchone()
            now = time.monotonic()
            self._marks.append((now, row[0]))  # type: ignore[index]
            while self._marks and self._marks[0][0] < now - 2 * self.max_lag - 1:
                self._marks.popleft()
        except (psycopg.Error, PoolTimeout, TimeoutError) as exc:
            log.info("replica probe: the primary's WAL position not read (%s)", exc)
        await asyncio.gather(*(self._probe(r) for r in self.replicas))

    async def _probe(self, replica: Replica) -> None:
        was = replica.answered
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT):
                if replica.probe_conn is None or replica.probe_conn.closed:
                    replica.probe_conn = await psycopg.AsyncConnection.connect(
                        replica.url, autocommit=True, connect_timeout=max(1, int(_PROBE_TIMEOUT)))
                row = await (await replica.probe_conn.execute(_PROBE_SQL)).fetchone()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            replica.answered = False
            if replica.probe_conn is not None:
                with contextlib.suppress(Exception):
                    await replica.probe_conn.close()
                replica.probe_conn = None
            if was:
                log.warning("%s does not answer (%s): reads go to the primary", replica.name, exc)
            return
        in_recovery, replayed = row  # type: ignore[misc]
        replica.answered = bool(in_recovery) and replayed is not None
        if not replica.answered:
            if was:
                log.warning("%s is not in recovery (promoted?): it is no replica of this primary any more", replica.name)
            return
        replica.replayed = replayed
        replica.fresh_at = next((at for at, mark in reversed(self._marks) if mark <= replayed), float("-inf"))
        if not was:
            log.info("%s answers (replayed to %d)", replica.name, replica.replayed)
