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
  set-based statement once every event is in; its ``cached`` variant keeps the aggregates'
  state in memory between batches instead of loading them back. Without it the rebuild uses
  ``apply`` itself.

and for the API and ``/v1/events``:

- ``scopes``: every kind of cache scope ``apply`` may return (``ScopeKind``): its name, its form
  (``<name>:<key>``, the bare ``<name>``, or both) and who may be told it changed (the audience).
  ``readside.api.changes.Hub`` routes by these declarations (``registry.route``), so a scope no
  read model declares is dropped, and a read model's own scopes are never silently lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import psycopg

from readside.schemas import Event

__all__ = [
    "EVERYONE", "NOBODY", "OWNER", "PARTICIPANTS", "ROLE", "ApplyFn", "BulkLoad", "Projection", "ScopeKind", "TableCheck", "role",
]

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
    # A fresh ``apply`` that keeps the aggregates it wrote in memory between its calls, for a
    # writer that is the only one to write those aggregates while it lives (a bulk phase, or a
    # bulk worker, which owns its keys); a call that raises forgets what it touched.
    cached: Callable[[], Callable[[psycopg.AsyncConnection, Sequence[Event]], Awaitable[None]]] | None = None


# Who may be told, on ``/v1/events``, that a scope changed (its ``ScopeKind.audience``):
OWNER = "owner"  # the viewer whose ``sub`` is the scope's key
PARTICIPANTS = "participants"  # the two participants of the thread the key names
EVERYONE = "everyone"  # every viewer
NOBODY = "nobody"  # nobody: not streamed (public responses, short-lived anyway)
ROLE = "role:"


def role(name: str) -> str:
    """The audience of the viewers holding the role ``name``."""
    return ROLE + name


@dataclass(frozen=True)
class ScopeKind:
    """One kind of cache scope: ``<name>:<key>`` (``keyed``) and/or the bare ``<name>`` (``bare``),
    and who may be told it changed (``audience``). A key may hold anything, ``:`` included."""

    name: str
    audience: str
    keyed: bool = True
    bare: bool = False

    def scope(self, key: str | None = None) -> str:
        """The scope string for ``key`` (None: the bare scope)."""
        if key is None:
            if not self.bare:
                raise ValueError(f"scope {self.name!r} needs a key")
            return self.name
        if not self.keyed:
            raise ValueError(f"scope {self.name!r} takes no key")
        return f"{self.name}:{key}"

    def parse(self, scope: str) -> tuple[bool, str | None]:
        """``(matches, key)``: whether ``scope`` is of this kind, and its key (None when bare)."""
        name, colon, key = scope.partition(":")
        if name != self.name:
            return False, None
        if colon:
            return self.keyed, key
        return self.bare, None


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
    scopes: tuple[ScopeKind, ...] = ()

    def check(self, table: str) -> TableCheck:
        return next((c for c in self.checks if c.table == table), TableCheck(table))

    def handles(self, event_type: str) -> bool:
        return event_type in self.event_types
