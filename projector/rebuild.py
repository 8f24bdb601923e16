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
   own ``apply`` (its ``cached`` variant when it has one: this process is the only writer of the
   shadow, so the aggregates it wrote stay in memory instead of being loaded back). The cyclic
   garbage collector is paused while the phase loads (``rebuild_bulk.load``). With ``workers`` > 1
   the phase runs in that many processes, the records split between them by key
   (``readside.projector.rebuild_bulk``).
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
import time
from collections.abc import Awaitable
from typing import TypeVar

import psycopg

from readside.projector import bookkeeping
from readside.projector.cutover import Cutover, RebuildAborted
from readside.projector.progress import duration
from readside.projector.rebuild_phases import Key, Options, State, key_of, positions_json
from readside.projector.replay import Replay
from readside.projector.shadow import Shadow, build_schema, prev_schema
from readside.readmodels.base import Projection
from readside.shared.errors import ConfigError
from readside.shared.settings import Settings

__all__ = ["Options", "RebuildAborted", "Rebuilder", "mark_interrupted"]

T = TypeVar("T")
ACTIVE = ("bulk", "index", "catch-up", "aborted", "publish")


class Rebuilder(Cutover):
    """One projection's rebuild or rollback, on a connection of its own (``_session``)."""

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
                await bookkeeping.cancel_rebuild(self._c, self.name)
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
                await bookkeeping.forget_previous_version(self._c, self.name)
            return f"{self.name}: dropped {previous.schema}; rollback is no longer possible"

    # -- session ---------------------------------------------------------------------------
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
                if not (await cur.fetchone())[0]:
                    await rebuilder._c.close()
                    raise ConfigError(f"another rebuild or rollback of {rebuilder.name} is running; wait for it, or stop it")
                # Rows and positions commit together, so a crash that loses the last commits
                # only makes the next run read those chunks again.
                await rebuilder._c.execute("SET synchronous_commit = off")

            async def __aexit__(self, *exc: object) -> None:
                await rebuilder.replay.stop()
                await rebuilder._c.close()

        return _Session()

    async def _state(self) -> State | None:
        row = await bookkeeping.rebuild_row(self._c, self.name)
        if row is None or row[2] not in ACTIVE:
            return None
        return State(*row)

    async def _start(self, shadow: Shadow) -> State:
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
        positions = {key_of(tp): 0 for tp in tps} | {k: 0 for k in live}
        async with self._c.transaction():
            await shadow.drop(self._c)  # a leftover without a rebuilds row (cancelled by hand)
            indexes = await shadow.create(self._c, positions)
            await self._begin("rebuild", version + 1, "bulk", indexes, positions)
        self._say(f"{self.name}: building v{version + 1} in schema {shadow.schema} (live: v{version})")
        state = await self._state()
        assert state is not None
        return state

    async def _begin(self, kind: str, target: int, phase: str, indexes: list[str], positions: dict[Key, int]) -> None:
        await bookkeeping.begin_rebuild(
            self._c, self.name, kind, target, phase, indexes, positions_json(positions), sum(positions.values())
        )

    # -- phases ----------------------------------------------------------------------------
    async def _run(self, shadow: Shadow, state: State) -> str:
        began = time.monotonic()
        if state.phase != "publish":
            await bookkeeping.set_state(self._c, self.name, "rebuilding")
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


def mark_interrupted(settings: Settings, name: str, kind: str) -> None:
    """After Ctrl-C or SIGTERM: the projection is live (on its current tables) and the rebuild
    says how to resume. Best effort: the database may be the reason we stopped."""

    async def mark() -> None:
        conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True, connect_timeout=5)
        async with conn:
            await bookkeeping.mark_interrupted(conn, name, f"interrupted; resume with `readside {kind} {name}`")

    try:
        asyncio.run(mark())
    except psycopg.Error:
        pass
