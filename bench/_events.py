"""Filling a bench's read models through the product's own write path: events, as the projector sees them.

``event`` builds one event as a producer sends it and the projector decodes it (``make_event``,
``encode``, ``decode``: the contract's checks run on every one). ``feed`` applies a stream of them
with each read model's registered loader, as ``readside rebuild``'s bulk phase does: the bulk
loader (``REGISTRY[name].bulk.apply``, then ``bulk.finish`` once) where the read model has one,
else its live ``apply``; one transaction per batch and read model. Like the rebuild's shadow
tables, the read models' tables are filled without their secondary indexes, which their DDL
(re-run at the end) builds again. So a bench holds what the product writes, whatever its tables
look like: no column list is restated here.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg

from bench._common import say
from readside.readmodels.base import Projection
from readside.readmodels.registry import REGISTRY
from readside.schemas import TOPICS, Event, decode
from readside.schemas.publisher import encode, make_event
from readside.schemas.registry import topic_of
from readside.shared.db import migrate

__all__ = ["event", "feed"]

_ids = itertools.count()


def event(type_: str, payload: dict[str, Any], at: datetime) -> Event:
    """The decoded event of type ``type_`` with ``payload``, occurred ``at`` (aware)."""
    topic = topic_of(type_)
    envelope = make_event(type_, payload, event_id=f"bench-{next(_ids)}", occurred_at=at)
    decoded = decode(topic, payload[TOPICS[topic][0]].encode(), encode(envelope))
    assert isinstance(decoded, Event), decoded
    return decoded


def _secondary_indexes(conn: psycopg.Connection, tables: Sequence[str]) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
        "WHERE t.relname = ANY(%s) AND NOT x.indisunique AND t.relnamespace = 'public'::regnamespace", (list(tables),))]


def feed(url: str, names: Sequence[str], events: Iterable[Event], *, batch: int = 10_000,
         note: Callable[[], str] | None = None) -> int:
    """Create the read models ``names`` (``migrate``) and apply ``events`` to each one that handles
    them, ``batch`` events at a time; return how many events were read. Progress goes to stderr,
    with ``note()`` (what the generator has made so far) when given."""
    if batch < 1:
        raise ValueError("batch must be positive")
    projections = [REGISTRY[n] for n in names]
    migrate(url, projections)
    with psycopg.connect(url, autocommit=True) as conn:
        for name in _secondary_indexes(conn, [t for p in projections for t in p.tables]):
            conn.execute(f'DROP INDEX "{name}"')
    count = asyncio.run(_feed(url, projections, events, batch, note))
    with psycopg.connect(url, autocommit=True) as conn:
        for p in projections:
            conn.execute(p.ddl)  # builds the dropped indexes again
    return count


async def _feed(url: str, projections: list[Projection], events: Iterable[Event], batch: int,
                note: Callable[[], str] | None) -> int:
    began, count, shown = time.perf_counter(), 0, 0.0
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, options="-c TimeZone=UTC") as conn:

        async def write(chunk: list[Event]) -> None:
            for p in projections:
                mine = [e for e in chunk if p.handles(e.type)]
                if mine:
                    async with conn.transaction():
                        if p.bulk is not None:
                            await p.bulk.apply(conn, mine)
                        else:
                            await p.apply(conn, mine)

        chunk: list[Event] = []
        for e in events:
            chunk.append(e)
            if len(chunk) >= batch:
                await write(chunk)
                chunk, count = [], count + len(chunk)
                if (now := time.perf_counter()) - shown >= 5:
                    shown = now
                    say(f"  {count:,} events applied in {now - began:.0f}s ({count / (now - began):,.0f}/s)"
                        + (f"; {note()}" if note else ""))
        await write(chunk)
        count += len(chunk)
        for p in projections:
            if p.bulk is not None:
                async with conn.transaction():
                    await p.bulk.finish(conn)
    elapsed = time.perf_counter() - began
    say(f"  {count:,} events generated and applied in {elapsed:.1f}s ({count / max(elapsed, 1e-9):,.0f} events/s)")
    return count
