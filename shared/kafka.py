"""Kafka helpers: topic creation and high watermarks, shared by projector, load and tests."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, RecordTooLargeError, TopicAlreadyExistsError, for_code

from readside.shared.errors import BrokerUnavailable
from readside.shared.limits import MAX_RECORD_BYTES

__all__ = ["BrokerHeads", "BrokerUnavailable", "Head", "TOPIC_CONFIG", "create_topics"]

log = logging.getLogger(__name__)

# Workflow payloads reach 1 MB; replay needs full history (CONTRACT §3, ARCHITECTURE "Rebuild").
TOPIC_CONFIG = {"max.message.bytes": str(MAX_RECORD_BYTES), "retention.ms": "-1"}


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 3) -> list[str]:
    """Create the topics that do not exist yet (full retention, ``TOPIC_CONFIG``); returns the ones
    created. A topic another process created meanwhile is not an error; any other refusal by the
    broker raises, naming the topic; an unreachable broker raises ``BrokerUnavailable``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="readside-admin")
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        raise BrokerUnavailable(f"cannot reach the Kafka broker at {bootstrap}: start it, or set "
                                f"READSIDE_KAFKA_BOOTSTRAP ({exc})") from exc
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in dict.fromkeys(names) if n not in existing]
        if not wanted:
            return []
        new = [NewTopic(n, num_partitions=partitions, replication_factor=1, topic_configs=TOPIC_CONFIG) for n in wanted]
        try:
            response = await admin.create_topics(new)
        except TopicAlreadyExistsError:
            return []  # another process won the race
        # The admin client reports per-topic refusals in the response, it does not raise them.
        for topic, code, *message in response.topic_errors:
            if code and for_code(code) is not TopicAlreadyExistsError:
                raise for_code(code)(f"creating topic {topic}: {message[0] if message else ''}")
        log.info("created topics %s", wanted)
        return wanted
    finally:
        await admin.close()


@dataclass(frozen=True, slots=True)
class Head:
    """One partition as the broker sees it now.

    ``pending_since`` is the record timestamp (epoch seconds) of the first record at or after the
    position asked about — the oldest event a projection has not applied — or None when nothing is
    pending (or the broker did not hand the record over in time).
    """

    high_watermark: int
    pending_since: float | None


class BrokerHeads:
    """Reads partition heads straight from the broker, so a dead projector cannot hide its lag.

    Each call uses a short-lived consumer without a group (it never joins, never commits): fresh
    metadata every time, nothing held between calls. The high watermark is the larger of the Fetch
    response's and ``ListOffsets``' (the embedded broker under-reports the latter after
    multi-record batches). After a failure the broker is skipped for ``cooldown`` seconds, so a
    caller polling it falls back at once instead of waiting ``timeout`` every time.
    """

    def __init__(self, bootstrap: str, *, timeout: float = 3.0, cooldown: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.timeout = timeout
        self.cooldown = cooldown
        self._down_until = 0.0

    async def read(self, topics: Iterable[str], positions: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], Head]:
        """Heads of every partition of ``topics``; ``positions`` (default 0) are where pending starts.

        Partitions the broker did not answer for in time are left out. Raises
        :class:`BrokerUnavailable` when the broker cannot be reached at all.
        """
        if time.monotonic() < self._down_until:
            raise BrokerUnavailable("the broker did not answer moments ago")
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
            # Only the first pending record of each partition is wanted: keep reads small while a
            # projection catches up. A bigger first batch (1 MB workflow versions) still comes
            # whole from Apache Kafka when it leads a fetch; otherwise its time is left unknown.
            max_partition_fetch_bytes=256 * 1024,
            request_timeout_ms=int(self.timeout * 1000) + 1000,
            client_id="readside-status",
        )
        try:
            async with asyncio.timeout(self.timeout):
                await consumer.start()
                return await self._read(consumer, list(topics), positions)
        except TimeoutError:
            self._down_until = time.monotonic() + self.cooldown
            raise BrokerUnavailable(f"no answer from {self.bootstrap} within {self.timeout:g} s") from None
        except (KafkaError, OSError) as exc:
            self._down_until = time.monotonic() + self.cooldown
            raise BrokerUnavailable(f"cannot reach {self.bootstrap} ({type(exc).__name__})") from None
        finally:
            try:
                await consumer.stop()
            except (KafkaError, OSError):  # never started or already broken: nothing to release
                pass

    async def _read(
        self, consumer: AIOKafkaConsumer, topics: list[str], positions: Mapping[tuple[str, int], int]
    ) -> dict[tuple[str, int], Head]:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not tps:
            return {}
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, positions.get((tp.topic, tp.partition), 0))
        ends = await consumer.end_offsets(tps)
        first: dict[TopicPartition, float | None] = {}
        deadline = time.monotonic() + self.timeout / 2

        def settled(tp: TopicPartition) -> bool:
            hw = consumer.highwater(tp)
            if hw is None:
                return False
            return tp in first or max(hw, ends.get(tp, 0)) <= positions.get((tp.topic, tp.partition), 0)

        while not all(settled(tp) for tp in tps) and time.monotonic() < deadline:
            try:
                batch = await consumer.getmany(timeout_ms=100)
            except RecordTooLargeError:
                break  # the heads are in; the partitions without a first record fall back
            for tp, records in batch.items():
                start = positions.get((tp.topic, tp.partition), 0)
                pending = [r for r in records if r.offset >= start]
                if pending and tp not in first:
                    # -1: a broker that keeps no timestamps; the caller falls back to the checkpoint's age
                    first[tp] = pending[0].timestamp / 1000 if pending[0].timestamp > 0 else None
                    consumer.pause(tp)  # its timestamp is all we need from it
        out: dict[tuple[str, int], Head] = {}
        for tp in tps:
            hw = consumer.highwater(tp)
            if hw is not None:
                out[(tp.topic, tp.partition)] = Head(max(hw, ends.get(tp, 0)), first.get(tp))
        return out
