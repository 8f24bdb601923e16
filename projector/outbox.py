"""An invalidation that cannot be lost: the cache outbox and its relay.

A batch that changes cache scopes writes them, in its own transaction, as one row of
``cache_outbox`` (:func:`record`). After the commit the runner hands the scopes and the row's id to
the :class:`Invalidator`, which bumps their versions in Redis (and so announces them on the change
stream) at once, from memory, and deletes the row once the bump is done (one ``DELETE`` a second
for all of them). So the commit and the bump can no longer be separated by a crash:

- a projector killed between its commit and its bump leaves its row behind; the next projector to
  start relays every row at once, and every running one relays the rows older than
  ``SWEEP_AFTER`` seconds (:meth:`Invalidator.sweep`) — whichever projector instance gets there
  first, one at a time (``FOR UPDATE SKIP LOCKED``), deleted in the transaction that relayed them;
- Redis down: the bumps wait in memory and are retried every second; the rows stay until they
  are done, so a projector that dies meanwhile loses nothing either.

``readside dlq replay`` keeps each chunk's changed scopes the same way: bumped after the chunk's
commit, the row deleted then; with Redis down the row stays for a running projector's sweep.

A bump is idempotent in effect (a new version: the next read renders again), so a row relayed
twice — by its owner and by a sweep, in a race — costs one render more, never a stale body.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable

import psycopg
from psycopg_pool import AsyncConnectionPool

from readside.shared.cache import Cache, CacheDown

__all__ = ["SWEEP_AFTER", "Invalidator", "forget", "record"]

log = logging.getLogger(__name__)

SWEEP_AFTER = 5.0  # seconds: a row older than this was left by a projector that did not relay it
SWEEP_LIMIT = 1000  # rows per sweep transaction
TICK = 1.0  # seconds between retries, deletions and sweeps


async def record(conn: psycopg.AsyncConnection, projection: str, scopes: Iterable[str]) -> uuid.UUID:
    """The outbox row of a batch's changed ``scopes``, in the caller's transaction; its id (made
    here: no answer to wait for in pipeline mode)."""
    row_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO public.cache_outbox (id, projection, scopes) VALUES (%s, %s, %s)",
        (row_id, projection, sorted(scopes)),
    )
    return row_id


async def forget(conn: psycopg.AsyncConnection, rows: Iterable[uuid.UUID]) -> None:
    """Delete the outbox ``rows`` whose bumps are done."""
    await conn.execute("DELETE FROM public.cache_outbox WHERE id = ANY(%s)", (list(rows),))


class Invalidator:
    """After each commit, bump the cache versions of what changed (ARCHITECTURE invariant 8), then
    delete the batch's outbox row; relay the rows other projectors left (:meth:`sweep`)."""

    def __init__(self, cache: Cache, pool: AsyncConnectionPool | None = None) -> None:
        self.cache = cache
        self.pool = pool  # None: no outbox (the scopes come from memory only)
        self.pending: set[str] = set()
        self.pending_rows: set[uuid.UUID] = set()  # rows whose bumps are pending
        self.relayed: set[uuid.UUID] = set()  # rows bumped, to delete
        self.swept = 0  # rows relayed for another projector (or an earlier life of this one)

    async def __call__(self, projection: str, keys: set[str], row: uuid.UUID | None = None) -> None:
        self.pending |= keys
        if row is not None:
            self.pending_rows.add(row)
        await self.flush()

    async def flush(self) -> None:
        if not self.pending:
            self.relayed |= self.pending_rows
            self.pending_rows = set()
            return
        keys, self.pending = self.pending, set()
        rows, self.pending_rows = self.pending_rows, set()
        try:
            await self.cache.bump(keys)
        except CacheDown:
            self.pending |= keys
            self.pending_rows |= rows
            log.warning("cache down: %d version bump(s) pending", len(self.pending))
            return
        self.relayed |= rows

    async def forget_relayed(self) -> None:
        """Delete the rows whose bumps are done (kept for the next tick on failure)."""
        if not self.relayed or self.pool is None:
            return
        rows, self.relayed = self.relayed, set()
        try:
            async with self.pool.connection() as conn:
                await forget(conn, rows)
        except psycopg.Error as exc:
            self.relayed |= rows
            log.warning("cache outbox: could not delete %d relayed row(s): %s", len(rows), exc)

    async def sweep(self, older_than: float = SWEEP_AFTER) -> int:
        """Relay and delete the rows older than ``older_than`` seconds that are not this process's
        own in flight; returns how many. A bump that fails leaves them (rolled back) for later."""
        if self.pool is None:
            return 0
        mine = list(self.pending_rows | self.relayed)
        done = 0
        try:
            while True:
                async with self.pool.connection() as conn, conn.transaction():
                    cur = await conn.execute(
                        "SELECT id, scopes FROM public.cache_outbox "
                        "WHERE created_at < now() - make_interval(secs => %s) AND id <> ALL(%s) "
                        "ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED",
                        (older_than, mine, SWEEP_LIMIT),
                    )
                    rows = await cur.fetchall()
                    if not rows:
                        break
                    await self.cache.bump({scope for _, scopes in rows for scope in scopes})
                    await forget(conn, (r[0] for r in rows))
                done += len(rows)
                if len(rows) < SWEEP_LIMIT:
                    break
        except CacheDown:
            pass  # the rows stay; the next tick tries again
        except psycopg.Error as exc:
            log.warning("cache outbox: sweep failed: %s", exc)
        if done:
            self.swept += done
            log.info("cache outbox: relayed %d row(s) another projector left", done)
        return done

    async def run(self, stop: asyncio.Event) -> None:
        await self.sweep(older_than=0.0)  # a restart relays at once what its predecessor left
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=TICK)
            except TimeoutError:
                await self.flush()
                await self.forget_relayed()
                await self.sweep()
        await self.flush()
        await self.forget_relayed()
