"""``readside rebuild`` and ``readside rollback``: a projection's next version, built beside the live
one from offset 0, then swapped in atomically.

Phases, recorded in ``rebuilds.phase`` (one row per projection) so a run resumes where the last
one stopped — after Ctrl-C or ``kill -9`` alike:

1. ``bulk``: the shadow tables (``readside.projector.shadow``, primary keys only) are filled from offset 0
   up to the live checkpoints as they were when the phase (re)started. A reader task fetches and
   decodes the next chunk while the previous one is written (one transaction per chunk:
   rows, ``rs_seen``, ``rs_checkpoints`` and the ``rebuilds`` row), with ``synchronous_commit``
   off — a crash loses at most the last chunks, rows and positions together. Memory is bounded
   by three chunks of ``bulk_batch`` decoded events (reading, queued, writing) plus the state of
   the aggregates one chunk touches; an aggregate touched again by a later chunk is loaded back
   from the shadow tables. The projection's ``bulk`` loader is used when it has one, else its
   own ``apply``. With ``workers`` > 1 the phase runs in that many processes, the partitions
   split between them (``readside.projector.rebuild_bulk``).
2. ``index``: in one transaction, the loader's ``finish`` (derived tables), every secondary
   index, ``ANALYZE``.
3. ``catch-up``: the tail, from the shadow's positions toward the live checkpoints (which keep
   moving while the live projector runs), in normal batches with the projection's ``apply``,
   until fewer than ``close_enough`` events remain.
4. cutover, one transaction: lock the live checkpoint rows ``FOR UPDATE`` (waits for the live
   projector's batch in flight, then holds its next one), apply the rest up to those
   checkpoints, compare with ``--verify``, lock the tables, swap them
   (``Shadow.swap``: live -> ``rs_prev_<name>``, shadow -> ``public``), and set the projection's
   version, previous version and generation. The live projector then resumes from the very same
   checkpoints, on the new tables (PostgreSQL resolves table names again after the lock wait and
   re-plans its prepared statements).
5. ``publish``: the new generation is written to Redis (``rs:g:<name>``), so no ETag or cached body
   of the previous tables is served again; then ``done``.

``rollback`` renames ``rs_prev_<name>`` to ``rs_build_<name>`` and runs phases 3-5 on it: the
previous version is brought forward from its own checkpoints with the same machinery and swapped
back in; the version it replaces becomes the new previous one.

The rebuild runs the projection code it was started from. Only one rebuild per projection runs at
a time (a session advisory lock).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, TextIO, TypeVar

import orjson
import psycopg
from aiokafka import TopicPartition

from readside.projector.progress import Progress, duration
from readside.readmodels.base import Projection
from readside.projector.rebuild_bulk import ShadowWriter, load, run_workers
from readside.projector.replay import Chunk, Replay
from readside.projector.shadow import Shadow, build_schema, prev_schema
from readside.projector.verify import TableDiff, compare, report
from readside.shared.cache import Cache, CacheDown
from readside.shared.errors import ConfigError, ReadsideError
from readside.shared.settings import Settings

__all__ = ["Options", "RebuildAborted", "Rebuilder", "mark_interrupted"]

Key = tuple[str, int]
T = TypeVar("T")
ACTIVE = ("bulk", "index", "catch-up", "aborted", "publish")
CUTOVER_RETRIES = 5  # lock conflicts (deadlock victim) tolerated in a row before giving up
log = logging.getLogger(__name__)


class RebuildAborted(ReadsideError):
    """The operator (or ``--verify`` without confirmation) stopped the cutover; the shadow stays."""


@dataclass(frozen=True)
class Options:
    verify: bool = False
    yes: bool = False
    max_rate: float | None = None
    bulk_batch: int = 50_000
    batch: int = 5_000
    workers: int = 1  # processes for the bulk phase
    close_enough: int = 2_000  # events left to the live position that the cutover applies under its lock
    confirm: Callable[[str], bool] | None = None  # asked when --verify finds differences
    stream: TextIO = field(default_factory=lambda: sys.stderr)


@dataclass
class _State:
    kind: str
    target_version: int
    phase: str
    indexes: list[str]


class _Differences(Exception):
    def __init__(self, diffs: list[TableDiff]) -> None:
        super().__init__("the new version differs from the live one")
        self.diffs = diffs


def _tp(key: Key) -> TopicPartition:
    return TopicPartition(*key)


def _key(tp: TopicPartition) -> Key:
    return (tp.topic, tp.partition)


def _label(key: Key) -> str:
    return f"{key[0]}[{key[1]}]"


class Rebuilder:
    def __init__(self, settings: Settings, projection: Projection, options: Options | None = None) -> None:
        self.settings = settings
        self.projection = projection
        self.name = projection.name
        self.options = options or Options()
        self.out = self.options.stream
        self.conn: psycopg.AsyncConnection | None = None
        self.replay = Replay(settings, projection)
        self._rate_began = 0.0
        self._rate_done = 0
        self.timings: dict[str, float] = {}  # seconds per phase of this run
        self.events: dict[str, int] = {}  # offsets read per phase of this run

    # -- entry points ------------------------------------------------------------------------
    async def rebuild(self) -> str:
        """Build (or resume building) the next version and cut over; returns a summary line."""
        async with self._session():
            state = await self._state()
            shadow = Shadow(self.projection, build_schema(self.name))
            if state is not None and state.kind != "rebuild":
                raise ConfigError(
                    f"a rollback of {self.name} is in progress ({state.phase}): finish it with "
                    f"`readside rollback {self.name}`, or cancel it with `readside rebuild --cancel {self.name}`"
                )
            if state is not None and state.phase == "publish":
                self._say(f"{self.name}: v{state.target_version} is live; publishing its generation to the cache")
            elif state is not None and await shadow.exists(self._c):
                self._say(f"{self.name}: resuming the rebuild of v{state.target_version} ({state.phase})")
            else:
                state = await self._start(shadow)
            return await self._run(shadow, state)

    async def rollback(self) -> str:
        """Bring the previous version forward and swap it back in; returns a summary line."""
        async with self._session():
            state = await self._state()
            shadow = Shadow(self.projection, build_schema(self.name))
            if state is not None and state.kind != "rollback":
                raise ConfigError(
                    f"a rebuild of {self.name} is in progress ({state.phase}): finish it with "
                    f"`readside rebuild {self.name}`, or cancel it with `readside rebuild --cancel {self.name}`"
                )
            if state is None:
                previous = Shadow(self.projection, prev_schema(self.name))
                if not await previous.exists(self._c):
                    raise ConfigError(f"{self.name} has no previous version to roll back to ({previous.schema} does not exist)")
                version, previous_version, _ = await self._versions()
                async with self._c.transaction():
                    await previous.rename(self._c, shadow.schema)
                    # a version kept from before this code added tables: they start empty
                    added = await shadow.add_missing_tables(self._c)
                    await self._begin(
                        "rollback", previous_version or version - 1, "catch-up", [], await shadow.positions(self._c)
                    )
                state = await self._state()
                assert state is not None
                self._say(f"{self.name}: rolling back to v{state.target_version} (from {prev_schema(self.name)})")
                if added:
                    self._say(f"{self.name}: v{state.target_version} had no {', '.join(added)}; created empty")
            return await self._run(shadow, state)

    async def cancel(self) -> str:
        async with self._session():
            state = await self._state()
            shadow = Shadow(self.projection, build_schema(self.name))
            async with self._c.transaction():
                if state is not None and state.kind == "rollback" and await shadow.exists(self._c):
                    await shadow.rename(self._c, prev_schema(self.name))  # the previous version stays
                else:
                    await shadow.drop(self._c)
                await self._c.execute(
                    "UPDATE public.rebuilds SET phase = 'cancelled', updated_at = now() WHERE projection = %s", (self.name,)
                )
                await self._c.execute("UPDATE public.projections SET state = 'live' WHERE name = %s", (self.name,))
            return f"{self.name}: {'rollback' if state and state.kind == 'rollback' else 'rebuild'} cancelled"

    async def drop_previous(self) -> str:
        async with self._session():
            state = await self._state()
            if state is not None and state.kind == "rollback":
                raise ConfigError(f"a rollback of {self.name} is in progress; cancel it first (readside rebuild --cancel {self.name})")
            previous = Shadow(self.projection, prev_schema(self.name))
            if not await previous.exists(self._c):
                return f"{self.name}: no previous version kept ({previous.schema} does not exist)"
            async with self._c.transaction():
                await previous.drop(self._c)
                await self._c.execute("UPDATE public.projections SET previous_version = NULL WHERE name = %s", (self.name,))
            return f"{self.name}: dropped {previous.schema}; rollback is no longer possible"

    # -- session ---------------------------------------------------------------------------
    @property
    def _c(self) -> psycopg.AsyncConnection:
        assert self.conn is not None
        return self.conn

    def _session(self):  # noqa: ANN202 - an async context manager
        rebuilder = self

        class _Session:
            async def __aenter__(self) -> None:
                from readside.shared.db import migrate

                await asyncio.to_thread(migrate, rebuilder.settings.database_url, [rebuilder.projection])
                rebuilder.conn = await psycopg.AsyncConnection.connect(
                    rebuilder.settings.database_url, autocommit=True, options="-c TimeZone=UTC"
                )
                cur = await rebuilder._c.execute("SELECT pg_try_advisory_lock(727002, hashtext(%s))", (rebuilder.name,))
                if not (await cur.fetchone())[0]:  # type: ignore[index]
                    await rebuilder._c.close()
                    raise ConfigError(f"another rebuild or rollback of {rebuilder.name} is running; wait for it, or stop it")
                # Rows and positions commit together, so a crash that loses the last commits
                # only makes the next run read those chunks again.
                await rebuilder._c.execute("SET synchronous_commit = off")

            async def __aexit__(self, *exc: object) -> None:
                await rebuilder.replay.stop()
                await rebuilder._c.close()

        return _Session()

    async def _state(self) -> _State | None:
        cur = await self._c.execute(
            "SELECT kind, target_version, phase, indexes FROM public.rebuilds WHERE projection = %s", (self.name,)
        )
        row = await cur.fetchone()
        if row is None or row[2] not in ACTIVE:
            return None
        return _State(row[0], row[1], row[2], list(row[3]))

    async def _versions(self) -> tuple[int, int | None, int]:
        cur = await self._c.execute(
            "SELECT version, previous_version, generation FROM public.projections WHERE name = %s", (self.name,)
        )
        row = await cur.fetchone()
        assert row is not None, "migrate inserts every projection"
        return row[0], row[1], row[2]

    async def _live(self, *, lock: bool = False) -> dict[Key, int]:
        cur = await self._c.execute(
            "SELECT topic, partition, next_offset FROM public.checkpoints WHERE projection = %s "
            "ORDER BY topic, partition" + (" FOR UPDATE" if lock else ""),
            (self.name,),
        )
        return {(t, p): o for t, p, o in await cur.fetchall()}

    async def _start(self, shadow: Shadow) -> _State:
        previous = Shadow(self.projection, prev_schema(self.name))
        version, previous_version, _ = await self._versions()
        if await previous.exists(self._c):
            raise ConfigError(
                f"{previous.schema} still holds v{previous_version}, the version the last cutover replaced (kept "
                f"for rollback). Drop it first: readside rebuild --drop-previous {self.name}"
            )
        live = await self._live()
        if not any(live.values()):
            raise ConfigError(
                f"{self.name} has not projected anything yet (no checkpoints): a rebuild replays up to the live "
                f"projector's position. Start `readside projector` first."
            )
        tps = await self.replay.start()
        positions = {_key(tp): 0 for tp in tps} | {k: 0 for k in live}
        async with self._c.transaction():
            await shadow.drop(self._c)  # a leftover without a rebuilds row (cancelled by hand)
            indexes = await shadow.create(self._c, positions)
            await self._begin("rebuild", version + 1, "bulk", indexes, positions)
        self._say(f"{self.name}: building v{version + 1} in schema {shadow.schema} (live: v{version})")
        state = await self._state()
        assert state is not None
        return state

    async def _begin(self, kind: str, target: int, phase: str, indexes: list[str], positions: dict[Key, int]) -> None:
        await self._c.execute(
            "INSERT INTO public.rebuilds (projection, kind, target_version, phase, indexes, positions, events_done) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (projection) DO UPDATE SET kind = excluded.kind, "
            "target_version = excluded.target_version, phase = excluded.phase, indexes = excluded.indexes, "
            "positions = excluded.positions, targets = '{}', events_done = excluded.events_done, events_total = 0, "
            "message = NULL, started_at = now(), updated_at = now()",
            (self.name, kind, target, phase, indexes, _json(positions), sum(positions.values())),
        )
        await self._c.execute("UPDATE public.projections SET state = 'rebuilding' WHERE name = %s", (self.name,))

    async def _phase(self, phase: str, message: str | None = None) -> None:
        await self._c.execute(
            "UPDATE public.rebuilds SET phase = %s, message = %s, updated_at = now() WHERE projection = %s",
            (phase, message, self.name),
        )

    # -- phases ----------------------------------------------------------------------------
    async def _run(self, shadow: Shadow, state: _State) -> str:
        began = time.monotonic()
        if state.phase != "publish":
            await self._c.execute("UPDATE public.projections SET state = 'rebuilding' WHERE name = %s", (self.name,))
            if self.replay.consumer is None:
                await self.replay.start()
        if state.phase == "bulk":
            self.events["bulk"] = await self._timed("bulk", self._bulk(shadow, state))
            state.phase = "index"
        if state.phase == "index":
            await self._timed("index", self._index(shadow, state))
            state.phase = "catch-up"
        if state.phase in ("catch-up", "aborted"):
            self.events["catch-up"] = await self._timed("catch-up", self._catch_up(shadow, state))
            generation = await self._timed("cutover", self._cutover(shadow, state))
        else:
            _, _, generation = await self._versions()
        await self._timed("publish", self._publish(generation))
        await self._phase("done")
        took = time.monotonic() - began
        counted = sum(self.events.values())
        rate = f", {counted / took:,.0f} events/s" if counted and took > 0 else ""
        verb = "rolled back" if state.kind == "rollback" else "cut over"
        return (
            f"{self.name}: {verb} to v{state.target_version} (generation {generation}) in {duration(took)}"
            f"{rate}; the replaced version is kept in {prev_schema(self.name)} — undo with `readside rollback "
            f"{self.name}`, free it with `readside rebuild --drop-previous {self.name}`"
        )

    async def _timed(self, phase: str, work: Awaitable[T]) -> T:
        began = time.monotonic()
        try:
            return await work
        finally:
            self.timings[phase] = time.monotonic() - began

    async def _positions(self, shadow: Shadow) -> dict[Key, int]:
        positions = await shadow.positions(self._c)
        missing = {k: 0 for k in await self._live() if k not in positions}  # partitions added since
        if missing:
            await shadow.set_positions(self._c, missing)
        return positions | missing

    async def _bulk(self, shadow: Shadow, state: _State) -> int:
        positions = await self._positions(shadow)
        live = await self._live()
        targets = {k: max(live.get(k, 0), positions[k]) for k in positions}
        await self._c.execute(
            "UPDATE public.rebuilds SET targets = %s, events_total = %s, updated_at = now() WHERE projection = %s",
            (_json(targets), sum(targets.values()), self.name),
        )
        start = sum(positions.values())
        progress = Progress(f"{self.name} v{state.target_version} bulk", sum(targets.values()), start=start, stream=self.out)
        show = lambda: progress.update(sum(positions.values()), self._per_topic(positions, targets))  # noqa: E731
        if self.options.workers > 1:
            positions = await self._bulk_workers(shadow, positions, targets, show)
        else:
            await self.replay.seek({_tp(k): o for k, o in positions.items()})
            self.replay.set_limits({_tp(k): o for k, o in targets.items()})
            self._rate_reset()

            async def after(chunk: Chunk) -> None:
                positions.update({_key(tp): end for tp, end in chunk.ends.items()})
                await self._report(positions)
                show()
                await self._throttle(chunk.records)

            await load(self.replay, self._writer(shadow), self._chunk_size(self.options.bulk_batch), after)
        progress.update(sum(positions.values()), self._per_topic(positions, targets), force=True)
        progress.finish()
        return sum(positions.values()) - start

    async def _bulk_workers(
        self, shadow: Shadow, positions: dict[Key, int], targets: dict[Key, int], show: Callable[[], None]
    ) -> dict[Key, int]:
        from readside.readmodels.registry import REGISTRY

        if REGISTRY.get(self.name) is not self.projection:
            raise ConfigError("--workers runs the registered projection in each worker: this one is not registered")

        async def poll() -> None:
            positions.update(await shadow.positions(self._c))
            await self._report(positions)
            show()

        o = self.options
        await run_workers(self.settings, self.name, shadow.schema, positions, targets, o.workers, o.bulk_batch, o.max_rate, poll)
        await poll()
        return positions

    def _writer(self, shadow: Shadow) -> ShadowWriter:
        return ShadowWriter(self._c, self.projection, shadow)

    async def _report(self, positions: dict[Key, int]) -> None:
        await self._c.execute(
            "UPDATE public.rebuilds SET positions = %s, events_done = %s, updated_at = now() WHERE projection = %s",
            (_json(positions), sum(positions.values()), self.name),
        )

    async def _index(self, shadow: Shadow, state: _State) -> None:
        self._say(f"{self.name} v{state.target_version}: deriving tables and building {len(state.indexes)} indexes")
        began = time.monotonic()
        async with self._c.transaction():
            await self._c.execute("SET LOCAL maintenance_work_mem = '256MB'")
            if self.projection.bulk is not None:
                await self._c.execute(f'SET LOCAL search_path = "{shadow.schema}"')
                await self.projection.bulk.finish(self._c)
                await self._c.execute("SET LOCAL search_path = public")
            await shadow.build_indexes(self._c, state.indexes)
            await self._phase("catch-up")
        self._say(f"{self.name} v{state.target_version}: indexes built in {duration(time.monotonic() - began)}")

    async def _catch_up(self, shadow: Shadow, state: _State) -> int:
        positions = await self._positions(shadow)
        await self._phase("catch-up")
        await self.replay.seek({_tp(k): o for k, o in positions.items()})
        start = sum(positions.values())
        progress: Progress | None = None
        self._rate_reset()
        while True:
            live = await self._live()
            behind = sum(max(live.get(k, 0) - o, 0) for k, o in positions.items())
            if progress is None:
                progress = Progress(f"{self.name} v{state.target_version} catch-up", behind, stream=self.out)
            progress.total = sum(positions.values()) - start + behind
            progress.update(sum(positions.values()) - start, self._per_topic(positions, live))
            if behind <= self.options.close_enough:
                break
            self.replay.set_limits({_tp(k): max(live.get(k, 0), o) for k, o in positions.items()})
            chunk = await self.replay.chunk(self._chunk_size(self.options.batch))
            async with self._c.transaction():
                await self._writer(shadow).write(chunk, bulk=False)
            positions |= {_key(tp): end for tp, end in chunk.ends.items()}
            await self._report(positions)
            await self._throttle(chunk.records)
        progress.finish(f" — {behind:,} left for the cutover")
        return sum(positions.values()) - start

    async def _cutover(self, shadow: Shadow, state: _State) -> int:
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
                await self._c.execute("UPDATE public.projections SET state = 'live' WHERE name = %s", (self.name,))
                raise RebuildAborted(
                    f"{self.name}: cutover aborted; v{state.target_version} stays in {shadow.schema}. Run the rebuild "
                    f"again to retry (it resumes), add --yes to accept the differences, or drop it with "
                    f"`readside rebuild --cancel {self.name}`"
                ) from None

    async def _live_version(self) -> int:
        return (await self._versions())[0]

    async def _cutover_once(self, shadow: Shadow, state: _State, verify: bool) -> int:
        began = time.monotonic()
        async with self._c.transaction():
            await self._c.execute("SET LOCAL synchronous_commit = on")
            live = await self._live(lock=True)  # holds the live projector's next commit from here on
            positions = await self._positions(shadow)
            await self.replay.seek({_tp(k): o for k, o in positions.items()})
            self.replay.set_limits({_tp(k): max(live.get(k, 0), o) for k, o in positions.items()})
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
            cur = await self._c.execute(
                "UPDATE public.projections SET previous_version = version, version = %s, generation = generation + 1, "
                "state = 'live' WHERE name = %s RETURNING generation",
                (state.target_version, self.name),
            )
            (generation,) = await cur.fetchone()  # type: ignore[misc]
            await self._c.execute(
                "UPDATE public.rebuilds SET phase = 'publish', positions = %s, targets = %s, events_done = %s, "
                "events_total = %s, updated_at = now() WHERE projection = %s",
                (_json(live), _json(live), sum(live.values()), sum(live.values()), self.name),
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
                f"{self.name}: cut over, but Redis ({self.settings.redis_url}) did not take generation {generation}: "
                f"cached bodies of the replaced tables may be served until they expire (~6 min). Run "
                f"`readside rebuild {self.name}` again when Redis is back: it only publishes the generation."
            )
        finally:
            await cache.close()

    # -- pacing and output -------------------------------------------------------------------
    def _chunk_size(self, size: int) -> int:
        rate = self.options.max_rate
        return size if not rate else max(1, min(size, int(rate)))

    def _rate_reset(self) -> None:
        self._rate_began, self._rate_done = time.monotonic(), 0

    async def _throttle(self, records: int) -> None:
        self._rate_done += records
        if self.options.max_rate:
            ahead = self._rate_began + self._rate_done / self.options.max_rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)

    def _per_topic(self, positions: dict[Key, int], targets: dict[Key, int]) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for key, done in positions.items():
            topic = key[0][len(self.settings.topic_prefix) :]
            d, n = out.get(topic, (0, 0))
            out[topic] = (d + done, n + max(targets.get(key, 0), done))
        return out

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def _json(positions: dict[Key, int]) -> str:
    return orjson.dumps({_label(k): v for k, v in sorted(positions.items())}).decode()


def mark_interrupted(settings: Settings, name: str, kind: str) -> None:
    """After Ctrl-C or SIGTERM: the projection is live (on its current tables) and the rebuild
    says how to resume. Best effort: the database may be the reason we stopped."""
    try:
        with psycopg.connect(settings.database_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                "UPDATE public.rebuilds SET message = %s, updated_at = now() WHERE projection = %s AND phase <> 'done'",
                (f"interrupted; resume with `readside {kind} {name}`", name),
            )
            conn.execute("UPDATE public.projections SET state = 'live' WHERE name = %s AND state = 'rebuilding'", (name,))
    except psycopg.Error:
        pass
