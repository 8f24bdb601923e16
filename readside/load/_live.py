"""``run_load``: a live world of active aggregates, published at a steady rate with times = now."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from readside.load._broker import new_producer, start_client
from readside.load._providers import ProviderSim
from readside.load._requests import RequestSim
from readside.load._threads import ThreadSim
from readside.load._workflows import WorkflowSim
from readside.load._world import Record, Sim, World, to_ms

__all__ = ["LiveWorld", "run_load"]


class LiveWorld:
    """Pools of active aggregates; each call advances one of them (or starts a new one) at ``now``."""

    KINDS = ("threads", "requests", "providers", "workflows")
    WEIGHTS = (72, 14, 9, 5)
    TARGETS = {"threads": 40, "requests": 15, "providers": 25, "workflows": 8}

    def __init__(self, seed: int | None) -> None:
        self.world = World("live", seed, users=60, live=True)
        self.pools: dict[str, list[Sim]] = {kind: [] for kind in self.KINDS}

    def _new(self, kind: str) -> Sim:
        w = self.world
        if kind == "threads":
            return ThreadSim(w, w.rng.randint(5, 40))
        if kind == "requests":
            return RequestSim(w, w.rng.randint(3, 20), technicians=8)
        if kind == "providers":
            return ProviderSim(w)
        return WorkflowSim(w, w.rng.randint(1, 10))

    def next(self, now: int) -> list[Record]:
        rng = self.world.rng
        kind = rng.choices(self.KINDS, weights=self.WEIGHTS)[0]
        pool = self.pools[kind]
        if len(pool) < self.TARGETS[kind] or rng.random() < 0.03:
            sim = self._new(kind)
            pool.append(sim)
            return sim.start(now)
        sim = rng.choice(pool)
        records = sim.step(now)
        if sim.done:
            pool.remove(sim)
        return records


async def run_load(*, bootstrap: str, prefix: str = "", rate: float = 50.0, duration: float | None = None,
                   seed: int | None = None, stop: asyncio.Event | None = None) -> int:
    """Publish a live stream at about ``rate`` events/s, times = now, until ``duration`` or ``stop``.

    Returns the number of events the broker acknowledged. Prints progress to stderr every 5 s.
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    live = LiveWorld(seed)
    producer = new_producer(bootstrap)
    sent = 0
    began = report_at = time.monotonic()
    reported = 0
    try:
        await start_client(producer, bootstrap)
        while not (stop is not None and stop.is_set()):
            elapsed = time.monotonic() - began
            if duration is not None and elapsed >= duration:
                break
            pending: list[asyncio.Future[Any]] = []
            while sent + len(pending) < int(elapsed * rate) + 1:
                for record in live.next(to_ms(datetime.now(UTC))):
                    pending.append(await producer.send(prefix + record.topic, orjson.dumps(record.value),
                                                       key=record.key.encode()))
            await asyncio.gather(*pending)
            sent += len(pending)
            if time.monotonic() - report_at >= 5.0:
                now = time.monotonic()
                per_second = (sent - reported) / (now - report_at)
                print(f"readside load: {sent} events sent, {per_second:.0f} events/s",
                      file=sys.stderr, flush=True)
                report_at, reported = now, sent
            wait = min(0.2, sent / rate - (time.monotonic() - began))
            if wait > 0:
                if stop is None:
                    await asyncio.sleep(wait)
                else:
                    try:
                        await asyncio.wait_for(stop.wait(), wait)
                    except TimeoutError:
                        pass
    finally:
        await producer.stop()
    return sent
