"""What a read model declares so the engine can run it.

A projection is a small declarative unit: a name and version, the topics it reads, the event
types it handles, its DDL, and ``apply`` — the set-based write of one batch. ``apply`` runs
inside the engine's transaction (checkpoints, dedupe and dead letters commit with it); it loads
what the batch touches with one query per table, folds in memory with the module's pure
functions, and writes back with one statement per table. It returns the cache keys whose
content changed (bumped after commit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence

import psycopg

from schemas import Event

__all__ = ["ApplyFn", "Projection"]

ApplyFn = Callable[[psycopg.AsyncConnection, Sequence[Event]], Awaitable[set[str]]]


@dataclass(frozen=True)
class Projection:
    name: str
    version: int
    topics: tuple[str, ...]
    event_types: frozenset[str]
    ddl: str
    apply: ApplyFn
    tables: tuple[str, ...] = ()

    def handles(self, event_type: str) -> bool:
        return event_type in self.event_types
