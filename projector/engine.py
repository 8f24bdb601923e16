"""The projection engine: consume, decode, dedupe, fold, write, checkpoint — then notify.

One ``ProjectionRunner`` per projection, each with its own consumer group
(``<group_prefix>.<projection>``) over the projection's topics. Invariants (ARCHITECTURE.md):

1. Exactly-once effect: a batch's rows, checkpoints, dedupe records and dead letters commit in
   ONE PostgreSQL transaction. On assignment the consumer seeks to the stored checkpoint; Kafka's
   committed offsets are written after the commit (and its notification), for tooling only: in
   the background, one commit at a time carrying each partition's latest end, so the next batch
   never waits for them; a last one on exit.
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
   topic by a small pointer record (:func:`readside.projector.live.pointer`).
9. Graceful stop: ``stop`` is checked between batches; a batch in flight either commits whole or
   not at all; the consumer leaves its group on exit.

The batch itself goes through the write pipeline (``readside.projector.pipeline``) with the live
tables as its store (``readside.projector.live``); this module owns the consumer: assignment,
seeking to checkpoints, building batches, retrying, committing offsets, notifying.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from prometheus_client import Histogram
from psycopg_pool import AsyncConnectionPool

from readside.projector import bookkeeping, statistics
from readside.projector.live import POINTER_HEADER, LiveStore, pointer
from readside.projector.pipeline import Batch, Pipeline, Record, Written, decode_record
from readside.projector.readahead import Decoded, ReadAhead
from readside.readmodels.base import Projection
from readside.shared.errors import ReadsideError, RecordFault, RetryableError, translate
from readside.shared.settings import Settings

__all__ = ["OnCommit", "POINTER_HEADER", "ProjectionRunner", "STOP_STEP_SECONDS", "bounded", "pointer"]

log = logging.getLogger(__name__)

# After a commit: the projection, the cache scopes it changed, and the outbox row keeping them
# (None: no outbox) — readside.projector.outbox.Invalidator.
OnCommit = Callable[[str, set[str], UUID | None], Awaitable[None]]
MAX_FETCH_BYTES = 4 * 1024 * 1024
FETCH_TIMEOUT_MS = 200  # the longest a fetch (getmany) waits for records before the loop turns
# The broker's wait for a fetch while the runner is behind (aiokafka's default). Caught up, the
# wait is Settings.fetch_wait_ms (short: an event's latency); behind, records are there already,
# and a broker that fills a fetch only until the wait runs out (tansu, the embedded one) needs the
# time: at 10 ms it answered a 1M-event backlog ~100 records a fetch (~3k events/s, tansu at 70%
# CPU); at 500 ms, full fetches of ~4,400. Apache Kafka answers a full fetch at once either way.
CATCH_UP_WAIT_MS = 500
STOP_STEP_SECONDS = 10.0  # each step of a runner's exit (last offsets, leaving the group)
BATCH_EVENTS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000)


def _retried(exc: BaseException) -> ReadsideError | None:
    """What the main loop retries with backoff: ``exc`` translated, when it is the world's
    (:class:`RetryableError`: broker, database, fencing) — or a record's fault raised outside the
    pipeline's isolation (a bug, logged as one). None: not to be retried (it ends the runner)."""
    error = translate(exc)
    return error if isinstance(error, (RetryableError, RecordFault)) else None


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
        except Exception:
            log.warning("seek to checkpoints failed; retrying from the main loop", exc_info=True)


class ProjectionRunner:
    def __init__(
        self,
        settings: Settings,
        projection: Projection,
        pool: AsyncConnectionPool,
        producer: AIOKafkaProducer,
        on_commit: OnCommit | None = None,
        *,
        outbox: bool = False,
    ) -> None:
        self.settings = settings
        self.projection = projection
        self.pool = pool
        self.producer = producer
        self.on_commit = on_commit
        store = LiveStore(projection.name, producer, outbox=outbox)
        self.pipeline = Pipeline(store, projection.apply, on_poison=self._poisoned)
        self.prefix = settings.topic_prefix
        self.topics = [self.prefix + t for t in projection.topics]
        self.lock = asyncio.Lock()
        self.positions: dict[TopicPartition, int] = {}
        self.epochs: dict[TopicPartition, int] = {}
        self.gap_checked: dict[TopicPartition, int] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.offsets: dict[TopicPartition, int] = {}  # committed in PostgreSQL, not yet in Kafka
        self.committing: asyncio.Task[None] | None = None
        self.commit_error: BaseException | None = None  # a bug met by the background offset commit
        self.analyzing: asyncio.Task[None] | None = None  # readside.projector.statistics, beside the batches
        self.ahead = ReadAhead()  # the next batch, fetched and decoded while one commits (when behind)
        self.batches = 0
        self.events = 0
        # Per committed batch, from its processing's start to its notification sent
        # (projector/http.py serves them as readside_projector_batch_seconds / _batch_events).
        self.batch_seconds = Histogram("readside_projector_batch_seconds", "Batch latency", registry=None)
        self.batch_events = Histogram("readside_projector_batch_events", "Records per batch", registry=None,
                                      buckets=BATCH_EVENTS_BUCKETS)

    # -- partition bookkeeping -------------------------------------------------------------
    def forget(self, tp: TopicPartition) -> None:
        self.positions.pop(tp, None)
        self.offsets.pop(tp, None)
        self.epochs[tp] = self.epochs.get(tp, 0) + 1

    async def seek_to_checkpoints(self, tps: Sequence[TopicPartition]) -> None:
        if not tps:
            return
        assert self.consumer is not None
        name = self.projection.name
        async with self.pool.connection() as conn:
            rows = await bookkeeping.seed_checkpoints(conn, name, [(tp.topic, tp.partition) for tp in tps])
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
            # No linger of our own: a batch closes when the fetch returns, and the fetch returns
            # when records arrive (or, idle, after this wait; see Settings.fetch_wait_ms).
            fetch_max_wait_ms=self.settings.fetch_wait_ms,
            client_id=f"readside-{self.projection.name}",
        )
        self.consumer.subscribe(self.topics, listener=_Listener(self))
        if not await self._started(stop):
            return
        backoff = 0.2
        last_cleanup = last_analyze = 0.0
        try:
            while not stop.is_set():
                if self.commit_error is not None:
                    raise self.commit_error
                try:
                    self.consumer.resume(*self.consumer.paused())
                    await self._ensure_positions()
                    self._pace_fetches()
                    ahead = await self.ahead.take()
                    decoded: Decoded = {}
                    if ahead is not None:
                        epochs, fetched, decoded = ahead
                    else:
                        epochs = dict(self.epochs)
                        fetched = await self.consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS, max_records=self.settings.batch_max)
                    behind = sum(map(len, fetched.values())) >= self.settings.batch_max
                    if fetched and not behind:
                        # Caught up: no prefetch while this batch is processed (it would hold the
                        # few records that arrived meanwhile back a whole batch); the next fetch
                        # goes out when the batch is written, with its COMMIT (_resume_fetching),
                        # and brings everything since. Behind (a full batch), the prefetch stays.
                        self.consumer.pause(*self.consumer.assignment())
                    committed = None
                    started = time.perf_counter()
                    async with self.lock:
                        stale = [tp for tp in fetched if self.epochs.get(tp) != epochs.get(tp)]
                        for tp in stale:
                            # fetched across a seek or rebalance: drop, and rewind the fetch position
                            del fetched[tp]
                            if tp in self.positions and tp in self.consumer.assignment():
                                self.consumer.seek(tp, self.positions[tp])
                        if fetched:
                            committed = await self._process(fetched, decoded, behind)
                    if committed is not None:
                        await self._after_commit(*committed)
                        self.batch_seconds.observe(time.perf_counter() - started)
                        self.batch_events.observe(committed[0].read)
                    if time.monotonic() - last_cleanup > 600:
                        async with self.pool.connection() as conn:
                            await bookkeeping.purge_seen(conn, self.projection.name, self.settings.dedupe_days)
                        last_cleanup = time.monotonic()
                    if self.settings.analyze_every and time.monotonic() - last_analyze > self.settings.analyze_every \
                            and (self.analyzing is None or self.analyzing.done()):
                        # In the background: an ANALYZE of a large table takes a while, and blocks no write.
                        self.analyzing = asyncio.create_task(self._analyze())
                        last_analyze = time.monotonic()
                    backoff = 0.2
                except Exception as exc:
                    error = _retried(exc)
                    if error is None:
                        raise
                    if isinstance(error, RecordFault):  # outside the records' isolation: a bug
                        log.error("%s: %r outside the records' isolation; retrying in %.1fs", self.projection.name, exc, backoff)
                    else:
                        log.warning("%s: %s; retrying in %.1fs", self.projection.name, exc, backoff)
                    await _sleep_or_stop(stop, backoff)
                    backoff = min(backoff * 2, 10.0)
                    try:
                        async with self.lock:
                            await self._reseek_all()
                    except Exception as again:
                        if _retried(again) is None:
                            raise
                        # _ensure_positions tries again next turn
        finally:
            # Each step of the exit is bounded: a stop never hangs on the broker. A member that could
            # not leave is expired by the broker after its session timeout; PostgreSQL holds the truth.
            name = self.projection.name
            if self.analyzing is not None:
                self.analyzing.cancel()
                await asyncio.gather(self.analyzing, return_exceptions=True)
            await bounded(self.ahead.drop(self.consumer, self.positions), STOP_STEP_SECONDS, f"{name}: the read-ahead")
            await bounded(self._last_offsets(), STOP_STEP_SECONDS, f"{name}: the last Kafka offset commit")
            await bounded(self.consumer.stop(), STOP_STEP_SECONDS, f"{name}: leaving the consumer group")

    async def _started(self, stop: asyncio.Event) -> bool:
        """Start the consumer (its start waits for the group's first assignment, which waits for
        the sessions of killed members to expire) unless ``stop`` comes first: then False, the
        start abandoned and the consumer closed."""
        assert self.consumer is not None
        start = asyncio.ensure_future(self.consumer.start())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({start, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not start.done():
                start.cancel()
                await asyncio.gather(start, return_exceptions=True)
                await bounded(self.consumer.stop(), STOP_STEP_SECONDS, f"{self.projection.name}: closing the consumer")
        if start.cancelled():
            return False
        start.result()  # raises what the start raised
        return True

    async def _ensure_positions(self) -> None:
        assert self.consumer is not None
        missing = [tp for tp in self.consumer.assignment() if tp not in self.positions]
        if missing:
            async with self.lock:
                missing = [tp for tp in self.consumer.assignment() if tp not in self.positions]
                await self.seek_to_checkpoints(missing)

    async def _analyze(self) -> None:
        """Fresh planner statistics for the tables this runner fills (readside.projector.statistics),
        in a task of its own beside the batches. A failure is logged, and tried again next time."""
        try:
            async with self.pool.connection() as conn:
                done = await statistics.analyze_grown(conn, (*self.projection.tables, bookkeeping.DEDUPE))
        except Exception as exc:  # noqa: BLE001 - statistics are an optimization: the batches go on
            log.warning("%s: analyzing its tables failed: %s; trying again in %.0f s", self.projection.name, exc,
                        self.settings.analyze_every)
            return
        if done:
            log.info("%s: analyzed %s (changed past autovacuum's threshold since their last analyze)",
                     self.projection.name, ", ".join(done))

    # -- one batch ---------------------------------------------------------------------------
    def _batch(self, fetched: dict, decoded: Decoded) -> Batch | None:
        """The records fetched from the checkpoints on, decoded (``decoded``: what the read-ahead
        decoded already); None: nothing to commit."""
        name = self.projection.name
        batch = Batch()
        assert self.consumer is not None
        for tp in sorted(fetched, key=lambda t: (t.topic, t.partition)):
            start = self.positions.get(tp)
            records = [r for r in fetched[tp] if start is not None and r.offset >= start]
            if not records or start is None:
                continue
            if records[0].offset > start and self.gap_checked.get(tp) != start:
                # aiokafka's own offset reset can race our seek; never skip records silently.
                # Seek back once; a gap still there afterwards is the broker's (control records).
                log.info("%s: %s[%d] fetched from %d, checkpoint is %d: seeking back",
                         name, tp.topic, tp.partition, records[0].offset, start)
                self.gap_checked[tp] = start
                self.consumer.seek(tp, start)
                self.epochs[tp] = self.epochs.get(tp, 0) + 1
                continue
            batch.starts[tp] = start
            batch.ends[tp] = records[-1].offset + 1
            batch.read += batch.ends[tp] - start
            for r in records:
                key = (tp, r.offset)
                record = decoded[key] if key in decoded else self._decode(tp, r)
                if record is None:
                    log.debug("%s: skipped a type it does not handle at %s[%d]@%d", name, tp.topic, tp.partition, r.offset)
                    batch.skipped += 1
                    continue
                batch.records.append(record)
        if not batch.ends:
            return None
        for tp in self.consumer.assignment():
            head = self.consumer.highwater(tp)
            if head is not None:
                batch.heads[tp] = head
        return batch

    def _decode(self, tp: TopicPartition, r) -> Record | None:  # noqa: ANN001 - a ConsumerRecord
        return decode_record(self.projection, self.prefix, tp.topic, tp.partition, r.offset, r.key, r.value)

    async def _process(self, fetched: dict, decoded: Decoded, behind: bool) -> tuple[Batch, Written] | None:
        """Decode, dedupe, fold and commit one batch; returns what committed (None: nothing).
        ``behind`` (a full batch): the next one is read ahead while this one's COMMIT runs."""
        batch = self._batch(fetched, decoded)
        if batch is None:
            return None
        assert self.consumer is not None

        def at_commit() -> None:
            self._resume_fetching()
            if behind:  # the wait for the COMMIT's answer decodes the next batch
                self.ahead.start(self.consumer, self.epochs, self.settings.batch_max, FETCH_TIMEOUT_MS, self._decode)

        try:
            async with self.pool.connection() as conn:
                written = await self.pipeline.commit(conn, batch, before_commit=at_commit)
        except BaseException:
            await self.ahead.drop(self.consumer, self.positions)
            raise
        for tp, end in batch.ends.items():
            self.positions[tp] = end
        self.batches += 1
        self.events += batch.read
        return batch, written

    def _pace_fetches(self) -> None:
        """The broker's wait for the next fetches: ``CATCH_UP_WAIT_MS`` while the records not yet
        committed (high watermarks seen in fetches, minus positions) fill a batch, else
        ``Settings.fetch_wait_ms``. aiokafka has no setter: its fetcher reads
        ``_fetch_max_wait_ms`` for every fetch request it builds (aiokafka pinned in
        constraints.txt; tests/integration/test_projector.py sees the switch both ways)."""
        assert self.consumer is not None
        lag = 0
        for tp in self.consumer.assignment():
            high, position = self.consumer.highwater(tp), self.positions.get(tp)
            if high is not None and position is not None:
                lag += max(0, high - position)
        short = self.settings.fetch_wait_ms
        wait = max(short, CATCH_UP_WAIT_MS) if lag >= self.settings.batch_max else short
        fetcher = self.consumer._fetcher  # noqa: SLF001 - no public setter (docstring)
        if fetcher is not None and fetcher._fetch_max_wait_ms != wait:  # noqa: SLF001
            fetcher._fetch_max_wait_ms = wait  # noqa: SLF001

    def _resume_fetching(self) -> None:
        """The batch is written and its COMMIT about to go out: let the next fetch go out too,
        so it overlaps the commit and the notification instead of following them. (A commit that
        then fails is retried from the checkpoints: the seek drops what that fetch brought.)"""
        assert self.consumer is not None
        self.consumer.resume(*self.consumer.paused())

    def _poisoned(self, record: Record, exc: BaseException) -> None:
        log.error("%s: fold failed at %s[%d]@%d: %r", self.projection.name, record.topic, record.partition, record.offset, exc)

    async def _after_commit(self, batch: Batch, written: Written) -> None:
        """Right after the commit: the notification (cache versions, change stream), then Kafka's
        offsets in the background."""
        if self.on_commit and written.changed:
            try:
                await self.on_commit(self.projection.name, written.changed, written.outbox)
            except Exception:
                log.warning("%s: post-commit notification failed", self.projection.name, exc_info=True)
        for key, end in batch.ends.items():
            self.offsets[TopicPartition(*key)] = end
        if self.committing is None or self.committing.done():
            self.committing = asyncio.create_task(self._commit_offsets())

    async def _commit_offsets(self) -> None:
        """Kafka's committed offsets (tooling only), the latest of each partition, until none are
        pending. Outside the lock: Kafka's commit waits for a rebalance to finish, and the rebalance
        waits for the lock (on_partitions_revoked). Never raises: a failure leaves the offsets
        pending for the next batch's commit; a bug is raised by the main loop."""
        assert self.consumer is not None
        while self.offsets:
            offsets, self.offsets = self.offsets, {}
            try:
                async with asyncio.timeout(5):
                    await self.consumer.commit(offsets)
            except Exception as exc:  # noqa: BLE001 - a bug is handed to the main loop, which raises it
                if _retried(exc) is None:
                    self.commit_error = exc
                    return
                log.debug("%s: kafka offset commit skipped: %s", self.projection.name, exc)
                for tp, end in offsets.items():  # unless a newer one, or a revocation, came meanwhile
                    if tp in self.positions:
                        self.offsets.setdefault(tp, end)
                return

    async def _last_offsets(self) -> None:
        """On exit: the commit in flight, then the offsets still pending."""
        if self.committing is not None:
            await asyncio.gather(self.committing, return_exceptions=True)
        if self.offsets and self.commit_error is None:
            await self._commit_offsets()


async def bounded(step: Awaitable[None], seconds: float, what: str) -> None:
    """Await ``step`` for at most ``seconds``; past that, cancel it, say so, and go on."""
    try:
        await asyncio.wait_for(step, timeout=seconds)
    except TimeoutError:
        log.warning("%s did not finish within %.0f s; going on with the stop", what, seconds)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
