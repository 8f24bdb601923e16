"""What a read model declares so the engine can run it.

A projection is a small declarative unit: a name and version, the topics it reads, the event
types it handles, its DDL, and ``apply`` — the set-based write of one batch. ``apply`` runs
inside the engine's transaction (checkpoints, dedupe and dead letters commit with it); it loads
what the batch touches with one query per table, folds in memory with the module's pure
functions, and writes back with one statement per table. It returns the cache keys whose
content changed (bumped after commit).

For ``readside rebuild`` (``readside.projector.rebuild``) a projection may also declare:

- ``checks``: how ``--verify`` compares each table between two versions. Counters that only
  exist for ETags (``viewer_versions``, a row's ``version``) depend on how events were batched,
  not on what they say: they are left out, and rows a delta-kept counter leaves at zero are
  ignored. Tables without a check are compared on every column.
- ``bulk``: a faster write path for the rebuild's bulk phase (from offset 0, into shadow tables
  that have only their primary keys): ``apply`` may skip the tables ``finish`` derives in one
  set-based statement once every event is in. Without it the rebuild uses ``apply`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence

import psycopg

from readside.schemas import Event

__all__ = ["ApplyFn", "BulkLoad", "Projection", "TableCheck"]

ApplyFn = Callable[[psycopg.AsyncConnection, Sequence[Event]], Awaitable[set[str]]]


@dataclass(frozen=True)
class TableCheck:
    """How ``--verify`` compares ``table``: without the ``exclude``d columns, only the rows
    matching ``where`` (SQL), or not at all (``skip``)."""

    table: str
    exclude: tuple[str, ...] = ()
    where: str | None = None
    skip: bool = False


@dataclass(frozen=True)
class BulkLoad:
    """The rebuild's bulk write path: ``apply`` a large batch (no cache keys to return), then
    ``finish`` once, before the secondary indexes are built, to derive what ``apply`` skipped."""

    apply: Callable[[psycopg.AsyncConnection, Sequence[Event]], Awaitable[None]]
    finish: Callable[[psycopg.AsyncConnection], Awaitable[None]]


@dataclass(frozen=True)
class Projection:
    name: str
    version: int
    topics: tuple[str, ...]
    event_types: frozenset[str]
    ddl: str
    apply: ApplyFn
    tables: tuple[str, ...] = ()
    checks: tuple[TableCheck, ...] = ()
    bulk: BulkLoad | None = None

    def check(self, table: str) -> TableCheck:
        return next((c for c in self.checks if c.table == table), TableCheck(table))

    def handles(self, event_type: str) -> bool:
        return event_type in self.event_types
