"""A rebuild's cutover (phase 4 of ``readside.projector.rebuild``) and the publication of the
new generation (phase 5).

One transaction: lock the live checkpoint rows ``FOR UPDATE`` (waits for the live projector's
batch in flight, then holds its next one), apply the rest up to those checkpoints, compare with
``--verify``, lock the tables, swap them (``Shadow.swap``), and set the projection's version,
previous version and generation. A lost lock conflict (deadlock victim) rolls it back and it is
tried again, up to ``CUTOVER_RETRIES`` times in a row.
"""

from __future__ import annotations

import asyncio
import logging
import time

import psycopg

from readside.projector import bookkeeping
from readside.projector.rebuild_phases import Phases, State, positions_json, tp_of
from readside.projector.shadow import Shadow, prev_schema
from readside.projector.verify import TableDiff, compare, report
from readside.shared.cache import Cache, CacheDown
from readside.shared.cluster import PENDING, PENDING_WAIT
from readside.shared.errors import ReadsideError
from readside.shared.settings import redacted

__all__ = ["CUTOVER_RETRIES", "Cutover", "RebuildAborted"]

CUTOVER_RETRIES = 5  # lock conflicts (deadlock victim) tolerated in a row before giving up
log = logging.getLogger(__name__)


class RebuildAborted(ReadsideError):
    """The operator (or ``--verify`` without confirmation) stopped the cutover; the shadow stays."""


class _Differences(Exception):
    def __init__(self, diffs: list[TableDiff]) -> None:
        super().__init__("the new version differs from the live one")
        self.diffs = diffs


class Cutover(Phases):
    """The cutover and the publication, after the phases."""

    async def _cutover(self, shadow: Shadow, state: State) -> int:
        announced = await self._announce()
        try:
            return await self._cutover_attempts(shadow, state)
        except BaseException:
            if announced:
                await self._cancel_announcement()
            raise

    async def _announce(self) -> bool:
        """Redis Cluster: the generation becomes pending, then a wait longer than API processes
        keep a generation in process, before the swap's locks (``readside.shared.cache``)."""
        if not self.settings.redis_url:
            return False
        cache = Cache(self.settings.redis_url, timeout=1.0)
        if not cache.cluster:  # every request reads the generation from Redis: nothing to announce
            await cache.close()
            return False
        try:
            await cache.publish_generation(self.name, PENDING)
        except CacheDown as exc:
            raise ReadsideError(
                f"{self.name}: Redis ({redacted(self.settings.redis_url)}) did not take the cutover's announcement ({exc.__cause__}); "
                f"nothing was swapped — run the same command again when Redis is back"
            ) from None
        finally:
            await cache.close()
        self._say(f"{self.name}: cutover announced; the API answers from PostgreSQL; swapping in {PENDING_WAIT:g} s")
        await asyncio.sleep(PENDING_WAIT)
        return True

    async def _cancel_announcement(self) -> None:
        cache = Cache(self.settings.redis_url, timeout=1.0)  # type: ignore[arg-type]
        try:
            await cache.publish_generation(self.name, None)
        except CacheDown as exc:
            log.warning("%s: the cutover failed and Redis did not take its cancellation (%s): the API answers "
                        "this projection from PostgreSQL until the next cutover publishes a generation",
                        self.name, exc.__cause__)
        finally:
            await cache.close()

    async def _cutover_attempts(self, shadow: Shadow, state: State) -> int:
        verify = self.options.verify and state.kind == "rebuild"
        conflicts = 0
        while True:
            try:
                return await self._cutover_once(shadow, state, verify)
            except psycopg.errors.TransactionRollback as exc:  # a deadlock victim: nothing was swapped
                conflicts += 1
                if conflicts > CUTOVER_RETRIES:
                    raise ReadsideError(
                        f"{self.name}: the cutover lost {conflicts} lock conflicts in a row ({exc}); nothing was "
                        f"swapped — run the same command again to resume at the catch-up"
                    ) from None
                log.info("%s: cutover rolled back by a lock conflict (%s); trying again", self.name, exc)
                await asyncio.sleep(0.2 * conflicts)
            except _Differences as exc:
                self._say(f"{self.name}: --verify found differences between live v{await self._live_version()} "
                          f"and v{state.target_version}:\n{report(exc.diffs)}")
                question = f"cut over to v{state.target_version} anyway? [y/N] "
                if self.options.yes or (self.options.confirm is not None and self.options.confirm(question)):
                    verify = False
                    continue
                await self._phase("aborted", "--verify found differences; the cutover was not made")
                await bookkeeping.set_state(self._c, self.name, "live")
                raise RebuildAborted(
                    f"{self.name}: cutover aborted; v{state.target_version} stays in {shadow.schema}. Run the rebuild "
                    f"again to retry (it resumes), add --yes to accept the differences, or drop it with "
                    f"`readside rebuild --cancel {self.name}`"
                ) from None

    async def _live_version(self) -> int:
        return (await self._versions())[0]

    async def _cutover_once(self, shadow: Shadow, state: State, verify: bool) -> int:
        began = time.monotonic()
        async with self._c.transaction():
            await self._c.execute("SET LOCAL synchronous_commit = on")
            live = await self._live(lock=True)  # holds the live projector's next commit from here on
            positions = await self._positions(shadow)
            await self.replay.seek({tp_of(k): o for k, o in positions.items()})
            self.replay.set_limits({tp_of(k): max(live.get(k, 0), o) for k, o in positions.items()})
            rest = self.replay.remaining()
            while self.replay.remaining() > 0:
                await self._writer(shadow).write(await self.replay.chunk(self.options.batch), bulk=False)
            if verify:
                self._say(f"{self.name}: comparing v{state.target_version} with the live tables (the live projector waits)")
                diffs = await compare(self._c, self.projection, "public", shadow.schema)
                if any(d.differs for d in diffs):
                    raise _Differences(diffs)
                self._say(f"{self.name}: --verify: the tables are the same\n{report(diffs)}")
            attempts = await shadow.lock_for_swap(self._c, attempt_timeout_ms=await self._lock_attempt_ms())
            await shadow.swap(self._c, prev_schema(self.name))
            generation = await bookkeeping.cut_over(self._c, self.name, state.target_version)
            await bookkeeping.report_rebuild(
                self._c, self.name, positions_json(live), sum(live.values()), total=sum(live.values()), phase="publish"
            )
        self._say(
            f"{self.name}: cut over in {time.monotonic() - began:.2f} s ({rest:,} events applied under the checkpoint "
            f"lock, tables locked after {attempts} attempt(s))"
        )
        return generation

    async def _lock_attempt_ms(self) -> int:
        cur = await self._c.execute("SELECT setting::int FROM pg_settings WHERE name = 'deadlock_timeout'")
        deadlock_ms = (await cur.fetchone())[0]  # type: ignore[index]
        return max(20, min(deadlock_ms // 2, 500))

    async def _publish(self, generation: int) -> None:
        if not self.settings.redis_url:
            return
        cache = Cache(self.settings.redis_url, timeout=1.0)
        try:
            for attempt in range(8):
                try:
                    await cache.publish_generation(self.name, generation)
                    return
                except CacheDown:
                    await asyncio.sleep(min(2**attempt * 0.25, 8))
            raise ReadsideError(
                f"{self.name}: cut over, but Redis ({redacted(self.settings.redis_url)}) did not take generation {generation}: "
                f"cached bodies of the replaced tables may be served until they expire (~6 min). Run "
                f"`readside rebuild {self.name}` again when Redis is back: it only publishes the generation."
            )
        finally:
            await cache.close()
