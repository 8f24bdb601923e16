"""The write pipeline: one batch of records into a projection's tables, in the caller's transaction.

Every writer of projected rows goes through it — the live engine (``ProjectionRunner``), the
rebuild's bulk and catch-up phases and its cutover (``ShadowWriter``), and ``readside dlq
replay`` — so they share one meaning of dedupe, poison and position:

1. **decode** (:func:`decode_record`): a record becomes a :class:`Record` holding the event, or
   the reason the decoder rejected it (tombstones included); a type the projection does not
   handle is skipped and counted;
2. **positions** (``Store.record_positions``): where each partition got to, written first — the
   live store advances its checkpoints conditionally on where the batch started (fencing: a
   mismatch raises ``FencedError`` and the batch rolls back);
3. **dedupe** (``Store.first_seen``): the first record of each ``event_id`` in the batch, if its
   id was never recorded (first wins); the others are duplicates and are not applied;
4. **apply with poison isolation**: the fresh events in one savepoint; when that fails for the
   records' sake (:func:`readside.shared.errors.record_fault`) the batch is bisected, one
   savepoint per half, down to the events that fail alone — their reason is ``"<fold error>:
   <repr>"``; any other failure (the world's) propagates and the caller's transaction rolls back
   (:meth:`Pipeline.commit` in pipeline mode first writes the batch whole, with no savepoint, and
   isolates only when a record's fault rolled that attempt back);
5. **forget** (``Store.forget_seen``): a poison event was not applied, so its id must not count as
   seen — a re-send, or a replay after a fix, must still apply it;
6. **failures** (``Store.record_failures``): rejected records then poison — dead letters (table
   and ``<topic>.dlq``) for the live store, ``rs_failed`` for a shadow, the dead letters' new
   reasons for a replay;
7. ``Store.record_changes`` (optional): the cache scopes the batch changed, kept in its
   transaction (the live store's outbox row, relayed to Redis after the commit);
8. ``Store.finish``: what else the store keeps per batch (the live store: skipped count, last
   batch time, partition heads).

The transaction is the caller's: :meth:`Pipeline.commit` gives a batch one of its own (the live
engine, under its partition lock) — for a store that says ``pipelined = True`` (the live store;
a shadow's uses COPY), in psycopg's pipeline mode — statements whose answer is not
needed yet go out together (positions with the dedupe insert; the apply's loads; its writes with
its previews query; the batch's bookkeeping with the COMMIT), and the savepoint is synced before
it is released, so a record's fault still surfaces inside it; a rebuild commits chunk by chunk, its cutover writes the last
chunks inside its own transaction, and a dead-letter replay writes each projection's share of a
chunk in the transaction that claimed the dead letters and deletes those done. Once committed the
caller notifies with :attr:`Written.changed` — the engine right after the commit
(``on_commit``: cache versions, then the outbox row deleted; Kafka's offsets, for tooling only, follow in the background), a
replay after each chunk; a rebuild publishes a new generation at its cutover instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID

import psycopg
from aiokafka import TopicPartition

from readside.readmodels.base import Projection
from readside.schemas import Event, InvalidEvent, UnknownEvent, decode
from readside.schemas.envelope import clean_reason
from readside.shared.errors import record_fault

__all__ = ["Apply", "Batch", "BulkRecord", "Key", "Pipeline", "Record", "Store", "Written", "decode_record"]

Key = tuple[str, int]  # (topic, partition); a TopicPartition is one
Apply = Callable[[psycopg.AsyncConnection, list[Event]], Awaitable["set[str] | None"]]


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a topic, decoded: ``event`` when it decoded to an event the projection
    handles, else ``reason`` (why the decoder rejected it: it is dead-lettered as it is)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None  # None: a tombstone
    event: Event | None = None
    reason: str | None = None

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    @property
    def origin(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


class BulkRecord:
    """A :class:`Record` for the rebuild's bulk phase: the same fields and properties in a plain
    slotted class, built for every record read — a frozen dataclass's ``__init__`` sets each
    field through ``object.__setattr__`` (about 1 µs a record more, measured). Read-only by
    convention, as a record is."""

    __slots__ = ("event", "key", "offset", "partition", "reason", "topic", "value")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                 event: Event | None = None, reason: str | None = None) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.event = event
        self.reason = reason

    tp = Record.tp
    origin = Record.origin


@dataclass
class Batch:
    """Records in partition order and where each partition got to.

    ``ends[key]`` is the next offset of each partition read (exclusive), ``starts[key]`` where it
    began (the live store fences on it), ``read`` the records read (skipped ones included),
    ``heads`` the high watermarks seen while reading."""

    records: list[Record] = field(default_factory=list)
    ends: dict[Key, int] = field(default_factory=dict)
    read: int = 0
    skipped: int = 0
    starts: dict[Key, int] = field(default_factory=dict)
    heads: dict[Key, int] = field(default_factory=dict)

    @property
    def events(self) -> list[Record]:
        return [r for r in self.records if r.event is not None]

    @property
    def rejected(self) -> list[Record]:
        return [r for r in self.records if r.reason is not None]


def decode_record(
    projection: Projection, prefix: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
    make: Callable[..., Record] = Record,
) -> Record | None:
    """The record as ``projection`` sees it; None when it is to be skipped (an unknown type, or a
    type the projection does not handle). ``make``: :class:`Record`, or :class:`BulkRecord`."""
    base = topic[len(prefix) :] if prefix and topic.startswith(prefix) else topic
    try:
        decoded = decode(base, key, value)
    except InvalidEvent as exc:
        return make(topic, partition, offset, key, value, reason=exc.reason)
    except ValueError:  # only a dead letter's topic can be outside the contract
        reason = f"topic {topic!r} is not a contract topic under READSIDE_TOPIC_PREFIX={prefix!r}"
        return make(topic, partition, offset, key, value, reason=reason)
    if isinstance(decoded, UnknownEvent) or not projection.handles(decoded.type):
        return None
    return make(topic, partition, offset, key, value, decoded)


class Store(Protocol):
    """Where a pipeline keeps positions, seen event ids and failures (the live tables, a
    rebuild's shadow schema, the dead letters being replayed). A store whose statements (and its
    projection's ``apply``) may run in pipeline mode — no COPY — has ``pipelined = True``."""

    async def record_positions(self, conn: psycopg.AsyncConnection, batch: Batch) -> None: ...

    async def first_seen(self, conn: psycopg.AsyncConnection, event_ids: list[str]) -> set[str]: ...

    async def forget_seen(self, conn: psycopg.AsyncConnection, event_ids: list[str]) -> None: ...

    async def record_failures(self, conn: psycopg.AsyncConnection, failures: list[tuple[Record, str]]) -> None: ...

    async def finish(self, conn: psycopg.AsyncConnection, batch: Batch) -> None: ...

    # Optional: ``record_changes(conn, changed) -> UUID | None`` keeps the cache scopes a batch
    # changed in its transaction (the live store's outbox row: readside.projector.outbox).


@dataclass
class Written:
    """What one batch did: ``fresh`` events were applied (each the first of its ``event_id``, never
    seen before), ``poison`` failed in the fold (and were recorded as failures with the rejected
    records), ``changed`` names the cache scopes to bump (kept in the ``outbox`` row, if any)."""

    fresh: list[Record]
    poison: list[tuple[Record, str]]
    changed: set[str]
    outbox: UUID | None = None  # the outbox row holding ``changed``, when the store keeps one

    @property
    def fresh_ids(self) -> set[str]:
        return {r.event.event_id for r in self.fresh if r.event is not None}

    @property
    def poison_ids(self) -> set[str]:
        return {r.event.event_id for r, _ in self.poison if r.event is not None}


class Pipeline:
    """Dedupe, apply with poison isolation, and record through ``store``; ``apply`` is the
    projection's ``apply`` (or its bulk loader's); ``fold_error`` starts a poison's reason."""

    def __init__(
        self,
        store: Store,
        apply: Apply,
        *,
        fold_error: str = "fold error",
        on_poison: Callable[[Record, BaseException], None] | None = None,
    ) -> None:
        self.store = store
        self.apply = apply
        self.fold_error = fold_error
        self.on_poison = on_poison

    async def write(
        self, conn: psycopg.AsyncConnection, batch: Batch, *, pipeline: psycopg.AsyncPipeline | None = None,
        isolate: bool = True,
    ) -> Written:
        """Steps 2-7 of the module docstring, in the caller's transaction (``pipeline``: the
        connection is in pipeline mode — see :meth:`commit`). ``isolate=False``: the fresh events
        are applied without a savepoint, and a record's fault raises (the caller's transaction
        is then lost: :meth:`commit` writes the batch again, isolating)."""
        await self.store.record_positions(conn, batch)
        first: dict[str, Record] = {}
        for record in batch.records:
            if record.event is not None:
                first.setdefault(record.event.event_id, record)
        new = await self.store.first_seen(conn, list(first)) if first else set()
        fresh = [record for event_id, record in first.items() if event_id in new]
        changed: set[str] = set()
        if isolate:
            poison = await self._apply_isolating(conn, fresh, changed, pipeline)
        else:
            poison = []
            if fresh:
                changed |= await self.apply(conn, [r.event for r in fresh]) or set()  # type: ignore[misc]
        if poison:
            await self.store.forget_seen(conn, [r.event.event_id for r, _ in poison if r.event is not None])
        failures = [(r, r.reason) for r in batch.records if r.reason is not None] + poison
        if failures:
            await self.store.record_failures(conn, failures)
        keep = getattr(self.store, "record_changes", None)
        outbox = await keep(conn, changed) if keep is not None and changed else None
        await self.store.finish(conn, batch)
        failed = {id(r) for r, _ in poison}
        return Written([r for r in fresh if id(r) not in failed], poison, changed, outbox)

    async def commit(
        self, conn: psycopg.AsyncConnection, batch: Batch, *, before_commit: Callable[[], None] | None = None
    ) -> Written:
        """:meth:`write` in a transaction of its own (committed on return); in pipeline mode when
        the store is ``pipelined``: a statement waits for the server only when its answer is read
        (a batch of the thread mix went from ~25 round trips to 4).

        In pipeline mode the batch is first written whole, without a savepoint: no SAVEPOINT and
        RELEASE, and no round trip to close the savepoint before the batch's bookkeeping — what
        a small batch (low latency, a steady stream) spends most of its time on. A record's fault
        rolls that transaction back and the batch is written again, each event isolated (the
        dead letters are sent only then: the first attempt fails before its failures are
        recorded, since recording them reads the server's answers first).

        ``before_commit`` is called once the batch is written, just before its COMMIT is sent
        (the engine resumes fetching then, so the next fetch overlaps the commit)."""
        pipelined = getattr(self.store, "pipelined", False)
        if pipelined:
            try:
                return await self._attempt(conn, batch, before_commit, pipelined=True, isolate=False)
            except Exception as exc:
                if not record_fault(exc):
                    raise  # the world is down: rolled back, the batch is retried
        return await self._attempt(conn, batch, before_commit, pipelined=pipelined)

    async def _attempt(
        self, conn: psycopg.AsyncConnection, batch: Batch, before_commit: Callable[[], None] | None, *,
        pipelined: bool, isolate: bool = True,
    ) -> Written:
        """One transaction of :meth:`commit`: committed on return (the COMMIT's answer read)."""
        async with conn.pipeline() if pipelined else contextlib.nullcontext() as pipeline:
            async with conn.transaction():
                written = await self.write(conn, batch, pipeline=pipeline, isolate=isolate)
                if before_commit is not None:
                    before_commit()
        return written

    async def _apply_isolating(
        self,
        conn: psycopg.AsyncConnection,
        records: list[Record],
        changed: set[str],
        pipeline: psycopg.AsyncPipeline | None = None,
    ) -> list[tuple[Record, str]]:
        if not records:
            return []
        try:
            async with conn.transaction():  # a savepoint inside the caller's transaction
                scopes = await self.apply(conn, [r.event for r in records]) or set()  # type: ignore[misc]
                if pipeline is not None:
                    await pipeline.sync()  # the apply's last statements answer inside the savepoint
            changed |= scopes  # only the scopes of what was applied
            return []
        except Exception as exc:
            if not record_fault(exc):
                raise  # the world is down: the caller's transaction rolls back, the batch is retried
            if len(records) == 1:
                if self.on_poison is not None:
                    self.on_poison(records[0], exc)
                return [(records[0], clean_reason(f"{self.fold_error}: {exc!r}"))]
            mid = len(records) // 2
            return await self._apply_isolating(conn, records[:mid], changed, pipeline) + await self._apply_isolating(
                conn, records[mid:], changed, pipeline
            )
