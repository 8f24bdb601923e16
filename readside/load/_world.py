"""What every simulation shares: records, millisecond times, the world (random source, ids,
users) and the driver that runs aggregates to completion."""

from __future__ import annotations

import functools
import itertools
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from readside.schemas import make_event
from readside.schemas.registry import topic_of

__all__ = ["UNIX", "Record", "Sim", "World", "iso", "simulate", "time_order", "to_ms"]

_DEFAULT_START = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
UNIX = datetime(1970, 1, 1, tzinfo=UTC)
_SPAN_MS = 14 * 24 * 3600 * 1000


@dataclass(frozen=True)
class Record:
    topic: str  # the base topic name, e.g. "threads.events"; a prefix is added when publishing
    key: str
    value: dict[str, Any]  # the envelope


def iso(ms: int) -> str:
    """RFC 3339 UTC with milliseconds and ``Z``: ``2026-11-22T10:15:00.123Z`` (sorts as text)."""
    day, rest = divmod(ms, 86_400_000)
    seconds, millis = divmod(rest, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{_date(day)}T{hour:02d}:{minute:02d}:{second:02d}.{millis:03d}Z"


@functools.lru_cache(maxsize=4096)
def _date(day: int) -> str:
    return (UNIX + timedelta(days=day)).date().isoformat()


def to_ms(when: datetime) -> int:
    return (when.astimezone(UTC) - UNIX) // timedelta(milliseconds=1)


def time_order(records: list[Record]) -> list[Record]:
    # Stable: events of one aggregate at one instant keep the order they were made in.
    return sorted(records, key=lambda r: r.value["occurred_at"])


class World:
    """What simulations share: the random source, id counters, the user pool, known parents."""

    def __init__(self, kind: str, seed: int | None, users: int, live: bool = False) -> None:
        if users < 2:
            raise ValueError(f"users must be at least 2 (a thread has two participants), got {users}")
        if seed is None:
            self.rng = random.Random()
            self.tag = f"{self.rng.getrandbits(24):06x}"
        else:
            self.rng = random.Random(f"{kind}:{seed}")
            self.tag = f"live{seed}" if live else str(seed)
        self.users = users
        self.parents: list[str] = []  # top-level request ids, for subtasks
        self._counters: dict[str, itertools.count[int]] = {}

    def next_id(self, prefix: str) -> str:
        counter = self._counters.setdefault(prefix, itertools.count(1))
        return f"{prefix}-{self.tag}-{next(counter)}"

    def user(self, skew: float = 1.0) -> str:
        """A user id; ``skew`` > 1 favours the first ids, which get the heavy inboxes."""
        return f"u-{int(self.users * self.rng.random() ** skew) + 1}"

    def gap(self, scale: float = 1.0) -> int:
        """Milliseconds to an aggregate's next event: mostly minutes, sometimes hours or a day."""
        roll = self.rng.random()
        mean = 180_000 if roll < 0.65 else 3 * 3_600_000 if roll < 0.93 else 20 * 3_600_000
        return 1_000 + int(self.rng.expovariate(1 / (mean * scale)))

    def event(self, key: str, type_: str, payload: dict[str, Any], at: int) -> Record:
        """One event through the contract's builder (its payload validated), on the topic the
        registry gives its type, with an event id drawn from this world's random source."""
        event_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        envelope = make_event(type_, payload, event_id=event_id, occurred_at=UNIX + timedelta(milliseconds=at))
        return Record(topic_of(type_), key, envelope)


class Sim:
    """One aggregate: ``start`` and ``step`` return what happened at ``now``; ``done`` once over."""

    gap_scale = 1.0

    def __init__(self, world: World) -> None:
        self.w = world
        self.rng = world.rng
        self.id = ""
        self.done = False
        self._last = -1

    def at(self, now: int) -> int:
        """The time of this aggregate's next event: ``now``, or just after its previous one."""
        self._last = max(now, self._last + 1)
        return self._last

    def emit(self, type_: str, payload: dict[str, Any], at: int) -> Record:
        return self.w.event(self.id, type_, payload, at)

    def start(self, now: int) -> list[Record]:
        raise NotImplementedError

    def step(self, now: int) -> list[Record]:
        raise NotImplementedError


def simulate(make: Callable[[], Sim], count: int, world: World, start: datetime | None) -> list[Record]:
    """Simulate ``count`` aggregates to completion, each starting somewhere in a two-week span.

    Aggregates start in the order they are made (ids and creation times agree), so a subtask
    is always created after its parent.
    """
    origin = to_ms(start or _DEFAULT_START)
    starts = sorted(origin + world.rng.randrange(_SPAN_MS) for _ in range(count))
    records: list[Record] = []
    previous = origin - 1
    for first in starts:
        sim = make()
        now = previous = max(first, previous + 1)
        records += sim.start(now)
        while not sim.done:
            now += world.gap(sim.gap_scale)
            records += sim.step(now)
    return time_order(records)


