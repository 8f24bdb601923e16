"""Reading a projection's topics by position, for rebuilds: no consumer group, explicit limits.

``Replay`` assigns the partitions of a projection's topics to a plain consumer (manual
assignment: no group to join, nothing committed to Kafka), seeks each to a given offset and hands
out ``Batch``es (``readside.projector.pipeline``) of decoded records up to a per-partition limit (exclusive), in offset order within
each partition. Limits may move forward (the catch-up phase follows the live checkpoints);
partitions at their limit are paused, and one that dropped fetched records past its limit is
re-seeked when its limit moves.

Decoding is the engine's (``pipeline.decode_record``): a known type this projection handles is an
event; an unknown type, or a type the projection does not handle, is skipped and counted; an
invalid record is handed out with its reason (``Batch.rejected``): the rebuild runs today's decoder, which may
reject what the live one accepted, so it becomes a dead letter of the new version at the cutover
(one the live projector already wrote for the same origin is kept as it is). A rebuild
needs every offset from 0: a partition whose log starts later (retention) is an error naming the
fix.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from readside.projector.pipeline import Batch, Record, decode_record
from readside.readmodels.base import Projection
from readside.shared.errors import BrokerUnavailable, ReadsideError
from readside.shared.settings import Settings

__all__ = ["Replay", "RetentionError"]

MAX_FETCH_BYTES = 4 * 1024 * 1024
DECODE_SLICE = 2000  # records decoded between two yields to the event loop


class RetentionError(ReadsideError):
    """A partition no longer holds its full history: a rebuild from offset 0 is impossible."""


class Replay:
    def __init__(self, settings: Settings, projection: Projection) -> None:
        self.settings = settings
        self.projection = projection
        self.prefix = settings.topic_prefix
        self.topics = [self.prefix + t for t in projection.topics]
        self.consumer: AIOKafkaConsumer | None = None
        self.next: dict[TopicPartition, int] = {}
        self.limits: dict[TopicPartition, int] = {}
        self._rewind: set[TopicPartition] = set()
        # a bulk worker's share (``rebuild_bulk``): records whose key it does not own are read
        # (positions move past them) but neither decoded nor handed out
        self.owns: Callable[[bytes | None], bool] | None = None
        # what holds a decoded record: ``Record``, or ``BulkRecord`` in the bulk phase (``rebuild_bulk.load``)
        self.make: Callable[..., Record] = Record

    async def start(self) -> list[TopicPartition]:
        """Connect and return every partition of the projection's topics."""
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="none",  # never jump over missing history silently
            max_partition_fetch_bytes=MAX_FETCH_BYTES,
            fetch_max_bytes=16 * MAX_FETCH_BYTES,
            client_id=f"readside-rebuild-{self.projection.name}",
        )
        try:
            await self.consumer.start()
            tps = []
            for topic in self.topics:
                parts = self.consumer.partitions_for_topic(topic)
                if not parts:
                    await self.consumer._client.force_metadata_update()  # noqa: SLF001 - fresh metadata
                    parts = self.consumer.partitions_for_topic(topic)
                if not parts:
                    raise RetentionError(f"topic {topic!r} does not exist on {self.settings.kafka_bootstrap}")
                tps += [TopicPartition(topic, p) for p in sorted(parts)]
            return tps
        except KafkaError as exc:
            raise BrokerUnavailable(f"cannot reach the Kafka broker at {self.settings.kafka_bootstrap}: {exc}") from exc

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def seek(self, positions: dict[TopicPartition, int]) -> None:
        """Assign the partitions and place each at ``positions[tp]``; checks the history is there."""
        assert self.consumer is not None
        tps = sorted(positions, key=lambda t: (t.topic, t.partition))
        self.consumer.assign(tps)
        starts = await self.consumer.beginning_offsets(tps)
        for tp in tps:
            if starts[tp] > positions[tp]:
                raise RetentionError(
                    f"{tp.topic}[{tp.partition}] starts at offset {starts[tp]}: offsets before it were deleted "
                    f"(retention), so the projection cannot be replayed from {positions[tp]}. Topics read by "
                    f"projections need retention.ms=-1 (kafka-configs --alter --add-config retention.ms=-1)."
                )
            self.consumer.seek(tp, positions[tp])
        self.next = dict(positions)
        self.limits = dict(positions)  # nothing to read until limits are set
        self._rewind.clear()
        self.consumer.pause(*tps)

    def set_limits(self, limits: dict[TopicPartition, int]) -> None:
        assert self.consumer is not None
        for tp, limit in limits.items():
            self.limits[tp] = limit
            if self.next[tp] < limit:
                if tp in self._rewind:
                    self.consumer.seek(tp, self.next[tp])
                    self._rewind.discard(tp)
                self.consumer.resume(tp)
            else:
                self.consumer.pause(tp)

    def remaining(self) -> int:
        return sum(max(self.limits[tp] - self.next[tp], 0) for tp in self.next)

    async def chunk(self, max_records: int, *, idle_timeout: float = 10.0) -> Batch:
        """Up to about ``max_records`` records (one fetch more at most), or all left below the
        limits. Waits at most ``idle_timeout`` seconds without data before failing: the records
        below a limit exist (a checkpoint or a high watermark said so), so silence is an outage."""
        assert self.consumer is not None
        out = Batch()
        last_data = time.monotonic()
        while out.read < max_records and self.remaining() > 0:
            try:
                batch = await self.consumer.getmany(timeout_ms=200, max_records=min(max_records, 10_000))
            except OffsetOutOfRangeError as exc:
                raise RetentionError(
                    f"offsets out of range ({exc}): the topic lost history (retention); projections need "
                    f"retention.ms=-1"
                ) from exc
            except KafkaError as exc:
                raise BrokerUnavailable(f"broker error while replaying: {exc}") from exc
            if not batch:
                if time.monotonic() - last_data > idle_timeout:
                    raise BrokerUnavailable(
                        f"no records from the broker for {idle_timeout:.0f} s while {self.remaining()} are expected "
                        f"below {self._describe_limits()}"
                    )
                continue
            last_data = time.monotonic()
            for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
                await self._take(tp, batch[tp], out)
        return out

    async def _take(self, tp: TopicPartition, records: list, out: Batch) -> None:
        assert self.consumer is not None
        limit, start = self.limits[tp], self.next[tp]
        kept = [r for r in records if start <= r.offset < limit]
        if len(kept) < len(records) and records[-1].offset >= limit:
            self._rewind.add(tp)  # fetched past the limit: re-seek when the limit moves
            self.consumer.pause(tp)
        if not kept:
            return
        owns, make = self.owns, self.make
        for i, r in enumerate(kept):
            if i and i % DECODE_SLICE == 0:
                await asyncio.sleep(0)  # let the writer's database round trips progress
            if owns is not None and not owns(r.key):
                continue
            record = decode_record(self.projection, self.prefix, tp.topic, tp.partition, r.offset, r.key, r.value, make)
            if record is None:
                out.skipped += 1
                continue
            out.records.append(record)
        out.read += len(kept)
        self.next[tp] = out.ends[tp] = kept[-1].offset + 1
        if self.next[tp] >= limit:
            self.consumer.pause(tp)

    def _describe_limits(self) -> str:
        return ", ".join(f"{tp.topic}[{tp.partition}] {self.next[tp]}->{self.limits[tp]}" for tp in self.next)
