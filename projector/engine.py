"""The projection engine: consume, decode, dedupe, fold, write, checkpoint — then notify.

One ``ProjectionRunner`` per projection, each with its own consumer group
(``<group_prefix>.<projection>``) over the projection's topics. Invariants (ARCHITECTURE.md):

1. Exactly-once effect: a batch's rows, checkpoints, dedupe records and dead letters commit in
   ONE PostgreSQL transaction. On assignment the consumer seeks to the stored checkpoint; Kafka's
   committed offsets are written after the commit, for tooling only.
2. Fencing: the checkpoint update is conditional on the offset the batch started from; a
   mismatch (another instance moved it) raises ``FencedError`` and rolls the batch back.
3. At most once per ``event_id`` (the ``dedupe`` table, same transaction; first wins).
6. Set-based writes: the projection's ``apply`` gets the whole batch.
7. Poison never stops the line: invalid records (tombstones included) are dead-lettered
   (``<topic>.dlq`` + the ``dead_letters`` table); a write that fails for the records' sake
   (``readside.shared.errors.record_fault``: a fold that raises, a ``DataError``, an ``IntegrityError``,
   a ``ProgramLimitExceeded``...) is bisected down to the failing event, which is dead-lettered;
   operational errors (broker, database down, deadlocks) are retried with backoff, never
   skipped. A dead letter too large for its topic is kept whole in the table and announced on the
   topic by a small pointer record (:func:`pointer`).
9. Graceful stop: ``stop`` is checked between batches; a batch in flight either commits whole or
   not at all; the consumer leaves its group on exit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, Sequence

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from prometheus_client import Histogram
from psycopg_pool import AsyncConnectionPool

from readside.readmodels.base import Projection
from readside.schemas import Event, InvalidEvent, UnknownEvent, decode
from readside.schemas.envelope import clean_reason
from readside.shared.errors import FencedError, record_fault
from readside.shared.settings import Settings

__all__ = ["OnCommit", "POINTER_HEADER", "ProjectionRunner", "pointer"]

log = logging.getLogger(__name__)

OnCommit = Callable[[str, set[str]], Awaitable[None]]
MAX_FETCH_BYTES = 4 * 1024 * 1024
BATCH_EVENTS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000)
# Retried with backoff in the main loop. Any psycopg error is: one the records caused is isolated
# inside the batch (``_apply_isolating``), so one arriving here is not a record's to pay for.
RETRYABLE = (psycopg.Error, KafkaError, OSError, asyncio.TimeoutError, FencedError)
# The producer refusing one record for its size (client side) or the broker refusing it: the
# record's fault, not the broker's. Every other producer error is retried.
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
POINTER_HEADER = "readside-pointer"
POINTER_KEY_MAX = 1024  # a pointer keeps the record's key up to this size (else none)


@dataclass(frozen=True, slots=True)
class _Incoming:
    tp: TopicPartition
    offset: int
    key: bytes | None
    value: bytes | None  # None: a tombstone (dead-lettered)
    event: Event | None = None


class _Listener(ConsumerRebalanceListener):
    def __init__(self, runner: ProjectionRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        async with self.runner.lock:  # let the batch in flight finish first
            for tp in revoked:
                self.runner.forget(tp)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        # Never raise here (aiokafka only logs it): a failed seek is retried by the main loop.
        try:
            async with self.runner.lock:
                await self.runner.seek_to_checkpoints(list(assigned))
        except Exception:  # noqa: BLE001 - logged, retried from the main loop
            log.warning("seek to checkpoints failed; retrying from the main loop", exc_info=True)


class ProjectionRunner:
    def __init__(
        self,
        settings: Settings,
        projection: Projection,
        pool: AsyncConnectionPool,
        producer: AIOKafkaProducer,
        on_commit: OnCommit | None = None,
    ) -> None:
        self.settings = settings
        self.projection = projection
        self.pool = pool
        self.producer = producer
        self.on_commit = on_commit
        self.prefix = settings.topic_prefix
        self.topics = [self.prefix + t for t in projection.topics]
        self.lock = asyncio.Lock()
        self.positions: dict[TopicPartition, int] = {}
        self.epochs: dict[TopicPartition, int] = {}
        self.gap_checked: dict[TopicPartition, int] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.batches = 0
        self.events = 0
        # Per committed batch, from its processing's start to its offsets committed in Kafka
        # (projector/http.py serves them as readside_projector_batch_seconds / _batch_events).
        self.batch_seconds = Histogram("readside_projector_batch_seconds", "Batch latency", registry=None)
        self.batch_events = Histogram("readside_projector_batch_events", "Records per batch", registry=None,
                                      buckets=BATCH_EVENTS_BUCKETS)

    # -- partition bookkeeping -------------------------------------------------------------
    def forget(self, tp: TopicPartition) -> None:
        self.positions.pop(tp, None)
        self.epochs[tp] = self.epochs.get(tp, 0) + 1

    async def seek_to_checkpoints(self, tps: Sequence[TopicPartition]) -> None:
        if not tps:
            return
        assert self.consumer is not None
        name = self.projection.name
        topics = [tp.topic for tp in tps]
        parts = [tp.partition for tp in tps]
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO checkpoints (projection, topic, partition) "
                "SELECT %s, t, p FROM unnest(%b::text[], %b::int4[]) AS u(t, p) "
                "ON CONFLICT DO NOTHING",
                (name, topics, parts),
            )
            cur = await conn.execute(
                "SELECT topic, partition, next_offset FROM checkpoints "
                "WHERE projection = %s AND (topic, partition) IN "
                "(SELECT * FROM unnest(%b::text[], %b::int4[]))",
                (name, topics, parts),
            )
            rows = await cur.fetchall()
        for topic, partition, offset in rows:
            tp = TopicPartition(topic, partition)
            self.consumer.seek(tp, offset)
            self.positions[tp] = offset
            self.epochs[tp] = self.epochs.get(tp, 0) + 1
        log.info("%s: seeked to checkpoints %s", name, {f"{t}[{p}]": o for t, p, o in rows})

    async def _reseek_all(self) -> None:
        assert self.consumer is not None
        assigned = list(self.consumer.assignment())
        for tp in assigned:
            self.forget(tp)
        await self.seek_to_checkpoints(assigned)

    # -- main loop -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=f"{self.settings.group_prefix}.{self.projection.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=MAX_FETCH_BYTES,
            fetch_max_bytes=16 * MAX_FETCH_BYTES,
            client_id=f"readside-{self.projection.name}",
        )
        self.consumer.subscribe(self.topics, listener=_Listener(self))
        await self.consumer.start()
        backoff = 0.2
        last_cleanup = 0.0
        try:
            while not stop.is_set():
                try:
                    await self._ensure_positions()
                    epochs = dict(self.epochs)
                    batch = await self.consumer.getmany(timeout_ms=200, max_records=self.settings.batch_max)
                    committed = None
                    started = time.perf_counter()
                    async with self.lock:
                        stale = [tp for tp in batch if self.epochs.get(tp) != epochs.get(tp)]
                        for tp in stale:
                            # fetched across a seek or rebalance: drop, and rewind the fetch position
                            del batch[tp]
                            if tp in self.positions and tp in self.consumer.assignment():
                                self.consumer.seek(tp, self.positions[tp])
                        if batch:
                            committed = await self._process(batch)
                    if committed is not None:
                        # Outside the lock: Kafka's commit waits for a rebalance to finish, and the
                        # rebalance waits for the lock (on_partitions_revoked).
                        await self._after_commit(*committed)
                        self.batch_seconds.observe(time.perf_counter() - started)
                        self.batch_events.observe(sum(end - start for start, end in committed[0].values()))
                    if time.monotonic() - last_cleanup > 600:
                        await self._cleanup_dedupe()
                        last_cleanup = time.monotonic()
                    backoff = 0.2
                except RETRYABLE as exc:
                    if isinstance(exc, psycopg.Error) and record_fault(exc):  # outside the isolation: a bug
                        log.error("%s: %r outside the records' isolation; retrying in %.1fs", self.projection.name, exc, backoff)
                    else:
                        log.warning("%s: %s; retrying in %.1fs", self.projection.name, exc, backoff)
                    await _sleep_or_stop(stop, backoff)
                    backoff = min(backoff * 2, 10.0)
                    try:
                        async with self.lock:
                            await self._reseek_all()
                    except RETRYABLE:
                        pass  # _ensure_positions tries again next turn
        finally:
            await self.consumer.stop()  # leaves the group cleanly

    async def _ensure_positions(self) -> None:
        assert self.consumer is not None
        missing = [tp for tp in self.consumer.assignment() if tp not in self.positions]
        if missing:
            async with self.lock:
                missing = [tp for tp in self.consumer.assignment() if tp not in self.positions]
                await self.seek_to_checkpoints(missing)

    # -- one batch ---------------------------------------------------------------------------
    async def _process(self, batch: dict) -> tuple[dict[TopicPartition, tuple[int, int]], set[str]] | None:
        """Decode, dedupe, fold and commit one batch; returns what committed (None: nothing)."""
        name = self.projection.name
        items: list[_Incoming] = []
        dead: list[tuple[_Incoming, str]] = []
        skipped = 0
        ranges: dict[TopicPartition, tuple[int, int]] = {}
        assert self.consumer is not None
        for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
            start = self.positions.get(tp)
            records = [r for r in batch[tp] if start is not None and r.offset >= start]
            if not records or start is None:
                continue
            if records[0].offset > start and self.gap_checked.get(tp) != start:
                # aiokafka's own offset reset can race our seek; never skip records silently.
                # Seek back once; a gap still there afterwards is the broker's (control records).
                log.info("%s: %s[%d] fetched from %d, checkpoint is %d: seeking back", name, tp.topic, tp.partition, records[0].offset, start)
                self.gap_checked[tp] = start
                self.consumer.seek(tp, start)
                self.epochs[tp] = self.epochs.get(tp, 0) + 1
                continue
            ranges[tp] = (start, records[-1].offset + 1)
            base = tp.topic[len(self.prefix):]
            for r in records:
                incoming = _Incoming(tp, r.offset, r.key, r.value)
                try:
                    decoded = decode(base, r.key, r.value)
                except InvalidEvent as exc:
                    dead.append((incoming, exc.reason))
                    continue
                if isinstance(decoded, UnknownEvent) or not self.projection.handles(decoded.type):
                    log.debug("%s: skipped unknown type %r at %s[%d]@%d", name, decoded.type, tp.topic, tp.partition, r.offset)
                    skipped += 1
                    continue
                items.append(_Incoming(tp, r.offset, r.key, r.value, decoded))
        if not ranges:
            return None
        changed: set[str] = set()
        async with self.pool.connection() as conn:
            async with conn.transaction():
                await self._fence(conn, ranges)
                fresh = await self._dedupe(conn, items)
                poison = await self._apply_isolating(conn, fresh, changed)
                if poison:
                    await self._forget_dedupe(conn, poison)
                dead.extend(poison)
                if dead:
                    await self._dead_letter(conn, dead)
                await self._record(conn, skipped, len(items) + len(dead))
        for tp, (_, end) in ranges.items():
            self.positions[tp] = end
        self.batches += 1
        self.events += sum(end - start for start, end in ranges.values())
        return ranges, changed

    async def _fence(self, conn: psycopg.AsyncConnection, ranges: dict[TopicPartition, tuple[int, int]]) -> None:
        tps = list(ranges)
        cur = await conn.execute(
            "UPDATE checkpoints c SET next_offset = u.new, updated_at = now() "
            "FROM unnest(%b::text[], %b::int4[], %b::int8[], %b::int8[]) AS u(topic, part, old, new) "
            "WHERE c.projection = %s AND c.topic = u.topic AND c.partition = u.part AND c.next_offset = u.old",
            (
                [tp.topic for tp in tps],
                [tp.partition for tp in tps],
                [ranges[tp][0] for tp in tps],
                [ranges[tp][1] for tp in tps],
                self.projection.name,
            ),
        )
        if cur.rowcount != len(tps):
            raise FencedError(f"{self.projection.name}: checkpoint moved under this batch (rebalance); rolling back")

    async def _dedupe(self, conn: psycopg.AsyncConnection, items: list[_Incoming]) -> list[_Incoming]:
        first: dict[str, _Incoming] = {}
        for item in items:
            assert item.event is not None
            first.setdefault(item.event.event_id, item)
        if not first:
            return []
        cur = await conn.execute(
            "INSERT INTO dedupe (projection, event_id) SELECT %s, unnest(%b::text[]) "
            "ON CONFLICT DO NOTHING RETURNING event_id",
            (self.projection.name, sorted(first)),
        )
        new = {row[0] for row in await cur.fetchall()}
        return [item for eid, item in first.items() if eid in new]

    async def _forget_dedupe(self, conn: psycopg.AsyncConnection, poison: list[tuple[_Incoming, str]]) -> None:
        """A dead-lettered event was not applied: its id must not count as seen.

        Otherwise ``readside dlq replay`` (or a producer re-sending it) would skip it as a
        duplicate. These ids were inserted by this very batch (``_dedupe`` keeps only new ones).
        """
        await conn.execute(
            "DELETE FROM dedupe WHERE projection = %s AND event_id = ANY(%b::text[])",
            (self.projection.name, [item.event.event_id for item, _ in poison if item.event is not None]),
        )

    async def _apply_isolating(
        self, conn: psycopg.AsyncConnection, items: list[_Incoming], changed: set[str]
    ) -> list[tuple[_Incoming, str]]:
        """Apply the batch; if it fails for the records' sake (``record_fault``), bisect to the
        failing events and return them; any other failure propagates (the batch is retried)."""
        if not items:
            return []
        try:
            async with conn.transaction():  # a savepoint inside the batch transaction
                changed |= await self.projection.apply(conn, [i.event for i in items])  # type: ignore[misc]
            return []
        except Exception as exc:  # noqa: BLE001 - the records' fault is isolated below
            if not record_fault(exc):
                raise  # the world is down: the whole batch is retried
            if len(items) == 1:
                log.error("%s: fold failed at %s[%d]@%d: %r", self.projection.name, items[0].tp.topic, items[0].tp.partition, items[0].offset, exc)
                return [(items[0], clean_reason(f"fold error: {exc!r}"))]
            mid = len(items) // 2
            return await self._apply_isolating(conn, items[:mid], changed) + await self._apply_isolating(
                conn, items[mid:], changed
            )

    async def _dead_letter(self, conn: psycopg.AsyncConnection, dead: list[tuple[_Incoming, str]]) -> None:
        """Record ``dead`` in the table, then send each to ``<topic>.dlq`` — all before the batch
        commits: nothing is lost. One the topic cannot hold (too large, or a keyless tombstone
        the client cannot send) is announced there by a pointer record instead."""
        cur = await conn.execute(
            'INSERT INTO dead_letters (projection, topic, partition, "offset", key, value, reason) '
            "SELECT %s, * FROM unnest(%b::text[], %b::int4[], %b::int8[], %b::bytea[], %b::bytea[], %b::text[]) "
            "ON CONFLICT (projection, topic, partition, \"offset\") DO UPDATE SET reason = dead_letters.reason "
            'RETURNING id, topic, partition, "offset"',
            (
                self.projection.name,
                [i.tp.topic for i, _ in dead],
                [i.tp.partition for i, _ in dead],
                [i.offset for i, _ in dead],
                [i.key for i, _ in dead],
                [i.value for i, _ in dead],
                [r for _, r in dead],
            ),
        )
        ids = {(t, p, o): i for i, t, p, o in await cur.fetchall()}
        sent: list[tuple[_Incoming, str, int, asyncio.Future]] = []
        late: list[tuple[_Incoming, str, int]] = []
        for item, reason in dead:
            letter_id = ids[(item.tp.topic, item.tp.partition, item.offset)]
            if item.value is None and item.key is None:
                late.append((item, reason, letter_id))  # aiokafka sends no record without both
                continue
            try:
                future = await self.producer.send(item.tp.topic + ".dlq", item.value, key=item.key, headers=_headers(item, reason))
            except TOO_LARGE:
                late.append((item, reason, letter_id))
                continue
            sent.append((item, reason, letter_id, future))
        results = await asyncio.gather(*(f for *_, f in sent), return_exceptions=True)
        for (item, reason, letter_id, _), result in zip(sent, results):
            if isinstance(result, TOO_LARGE):
                late.append((item, reason, letter_id))
            elif isinstance(result, BaseException):
                raise result  # the broker is down: the batch is retried
        if late:
            futures = []
            for item, reason, letter_id in late:
                key = item.key if item.key is not None and len(item.key) <= POINTER_KEY_MAX else None
                headers = _headers(item, reason) + [(POINTER_HEADER, b"dead-letter")]
                futures.append(await self.producer.send(item.tp.topic + ".dlq", pointer(self.projection.name, item, letter_id), key=key, headers=headers))
            await asyncio.gather(*futures)
        log.warning("%s: dead-lettered %d record(s): %s", self.projection.name, len(dead), dead[0][1])

    async def _record(self, conn: psycopg.AsyncConnection, skipped: int, _count: int) -> None:
        assert self.consumer is not None
        tps = list(self.consumer.assignment())
        heads = [(tp, self.consumer.highwater(tp)) for tp in tps]
        heads = [(tp, hw) for tp, hw in heads if hw is not None]
        await conn.execute(
            "UPDATE projections SET skipped_unknown = skipped_unknown + %s, last_batch_at = now() WHERE name = %s",
            (skipped, self.projection.name),
        )
        if heads:
            await conn.execute(
                "INSERT INTO partition_heads (topic, partition, high_watermark) "
                "SELECT * FROM unnest(%b::text[], %b::int4[], %b::int8[]) "
                "ON CONFLICT (topic, partition) DO UPDATE SET "
                "high_watermark = GREATEST(partition_heads.high_watermark, excluded.high_watermark), observed_at = now()",
                ([tp.topic for tp, _ in heads], [tp.partition for tp, _ in heads], [hw for _, hw in heads]),
            )

    async def _after_commit(self, ranges: dict[TopicPartition, tuple[int, int]], changed: set[str]) -> None:
        assert self.consumer is not None
        try:
            async with asyncio.timeout(5):
                await self.consumer.commit({tp: end for tp, (_, end) in ranges.items()})
        except (KafkaError, TimeoutError) as exc:  # for tooling only: PostgreSQL holds the truth
            log.debug("%s: kafka offset commit skipped: %s", self.projection.name, exc)
        if self.on_commit and changed:
            try:
                await self.on_commit(self.projection.name, changed)
            except Exception:  # noqa: BLE001 - a cache outage must not stop projection
                log.warning("%s: post-commit notification failed", self.projection.name, exc_info=True)

    async def _cleanup_dedupe(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "DELETE FROM dedupe WHERE projection = %s AND seen_at < now() - make_interval(days => %s)",
                (self.projection.name, self.settings.dedupe_days),
            )


def _headers(item: _Incoming, reason: str) -> list[tuple[str, bytes]]:
    return [
        ("readside-error", reason.encode()),
        ("readside-origin-topic", item.tp.topic.encode()),
        ("readside-origin-partition", str(item.tp.partition).encode()),
        ("readside-origin-offset", str(item.offset).encode()),
    ]


def pointer(projection: str, item: _Incoming, dead_letter_id: int) -> bytes:
    """The small record that stands, on ``<topic>.dlq``, for a dead letter the topic cannot hold
    (larger than the producer's ``max_request_size`` or the topic's ``max.message.bytes``, or a
    tombstone without a key): where the whole record is (``readside dlq show <dead_letter_id>``).
    It carries the dead letter's headers plus ``readside-pointer: dead-letter``."""
    return orjson.dumps(
        {
            "dead_letter_id": dead_letter_id,
            "projection": projection,
            "topic": item.tp.topic,
            "partition": item.tp.partition,
            "offset": item.offset,
            "too_large": item.value is not None,
            "tombstone": item.value is None,
            "value_bytes": None if item.value is None else len(item.value),
            "key_bytes": None if item.key is None else len(item.key),
        }
    )


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass
