"""The phases of a rebuild before its cutover — bulk, index, catch-up — and what the rebuild's
parts share: its options, its state row, its bookkeeping. The order of the phases, resuming, and
the entry points are ``readside.projector.rebuild``'s; the cutover is ``readside.projector.cutover``'s.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import orjson
import psycopg
from aiokafka import TopicPartition

from readside.projector import bookkeeping
from readside.projector.pipeline import Batch
from readside.projector.progress import Progress, duration
from readside.projector.rebuild_bulk import ShadowWriter, load, run_workers, split_pending, split_positions
from readside.projector.replay import Replay
from readside.projector.shadow import Shadow
from readside.readmodels.base import Projection
from readside.shared.errors import ConfigError
from readside.shared.settings import Settings

__all__ = ["Key", "Options", "Phases", "State", "key_of", "positions_json", "tp_of"]

Key = tuple[str, int]


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
class State:
    """The ``rebuilds`` row of an unfinished rebuild or rollback."""

    kind: str
    target_version: int
    phase: str
    indexes: list[str]


def tp_of(key: Key) -> TopicPartition:
    return TopicPartition(*key)


def key_of(tp: TopicPartition) -> Key:
    return (tp.topic, tp.partition)


def _label(key: Key) -> str:
    return f"{key[0]}[{key[1]}]"


def positions_json(positions: dict[Key, int]) -> str:
    return orjson.dumps({_label(k): v for k, v in sorted(positions.items())}).decode()


class Phases:
    """The bulk, index and catch-up phases of one projection's rebuild, on one connection."""

    settings: Settings
    projection: Projection
    name: str
    options: Options
    out: TextIO
    conn: psycopg.AsyncConnection | None
    replay: Replay
    _rate_began: float
    _rate_done: int

    @property
    def _c(self) -> psycopg.AsyncConnection:
        assert self.conn is not None
        return self.conn

    async def _versions(self) -> tuple[int, int | None, int]:
        return await bookkeeping.versions(self._c, self.name)

    async def _live(self, *, lock: bool = False) -> dict[Key, int]:
        return await bookkeeping.live_checkpoints(self._c, self.name, lock=lock)

    async def _phase(self, phase: str, message: str | None = None) -> None:
        await bookkeeping.set_rebuild_phase(self._c, self.name, phase, message)

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def _positions(self, shadow: Shadow) -> dict[Key, int]:
        positions = await shadow.positions(self._c)
        missing = {k: 0 for k in await self._live() if k not in positions}  # partitions added since
        if missing:
            await shadow.set_positions(self._c, missing)
        return positions | missing

    async def _bulk(self, shadow: Shadow, state: State) -> int:
        positions = await self._positions(shadow)
        live = await self._live()
        targets = {k: max(live.get(k, 0), positions[k]) for k in positions}
        await bookkeeping.set_rebuild_targets(self._c, self.name, positions_json(targets), sum(targets.values()))
        start = sum(positions.values())
        progress = Progress(f"{self.name} v{state.target_version} bulk", sum(targets.values()), start=start, stream=self.out)
        show = lambda: progress.update(sum(positions.values()), self._per_topic(positions, targets))  # noqa: E731
        if self.options.workers > 1 or await split_pending(self._c, shadow):
            positions = await self._bulk_workers(shadow, positions, targets, show)
        else:
            await self.replay.seek({tp_of(k): o for k, o in positions.items()})
            self.replay.set_limits({tp_of(k): o for k, o in targets.items()})
            self._rate_reset()

            async def after(chunk: Batch) -> None:
                positions.update({key_of(tp): end for tp, end in chunk.ends.items()})
                await self._report(positions)
                show()
                await self._throttle(chunk.read)

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

        running = True

        async def poll() -> None:
            positions.update(await (split_positions(self._c, shadow) if running else shadow.positions(self._c)))
            await self._report(positions)
            show()

        o = self.options
        ran = await run_workers(
            self.settings, self.name, self._c, shadow, positions, targets, o.workers, o.bulk_batch, o.max_rate, poll
        )
        if ran != o.workers:
            self._say(f"{self.name}: the interrupted bulk phase was split between {ran} workers: resumed with {ran}")
        running = False
        await poll()
        return positions

    def _writer(self, shadow: Shadow) -> ShadowWriter:
        return ShadowWriter(self._c, self.projection, shadow)

    async def _report(self, positions: dict[Key, int]) -> None:
        await bookkeeping.report_rebuild(self._c, self.name, positions_json(positions), sum(positions.values()))

    async def _index(self, shadow: Shadow, state: State) -> None:
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

    async def _catch_up(self, shadow: Shadow, state: State) -> int:
        positions = await self._positions(shadow)
        await self._phase("catch-up")
        await self.replay.seek({tp_of(k): o for k, o in positions.items()})
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
            self.replay.set_limits({tp_of(k): max(live.get(k, 0), o) for k, o in positions.items()})
            chunk = await self.replay.chunk(self._chunk_size(self.options.batch))
            async with self._c.transaction():
                await self._writer(shadow).write(chunk, bulk=False)
            positions |= {key_of(tp): end for tp, end in chunk.ends.items()}
            await self._report(positions)
            await self._throttle(chunk.read)
        progress.finish(f" — {behind:,} left for the cutover")
        return sum(positions.values()) - start

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
