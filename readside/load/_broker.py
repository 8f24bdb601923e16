"""Sending records to the broker, and creating the contract topics where they are missing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from readside.load._world import Record
from readside.schemas import TOPICS as _REGISTRY
from readside.schemas.publisher import MAX_REQUEST_BYTES
from readside.shared.errors import RetryableError

__all__ = ["DLQ_SUFFIX", "MAX_MESSAGE_BYTES", "TOPICS", "ensure_topics", "new_producer", "publish", "start_client"]

TOPICS = tuple(_REGISTRY)  # the contract's topics, from the event registry
DLQ_SUFFIX = ".dlq"
MAX_MESSAGE_BYTES = MAX_REQUEST_BYTES  # topic max.message.bytes and producer max_request_size


def new_producer(bootstrap: str) -> Any:
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=MAX_MESSAGE_BYTES, linger_ms=5)


async def start_client(client: Any, bootstrap: str) -> None:
    from aiokafka.errors import KafkaConnectionError

    try:
        await client.start()
    except KafkaConnectionError as exc:
        raise RetryableError(f"cannot reach the Kafka broker at {bootstrap}: start it, or set "
                             f"READSIDE_KAFKA_BOOTSTRAP ({exc})") from exc


async def publish(records: Iterable[Record], *, bootstrap: str, prefix: str = "",
                  rate: float | None = None, progress: Callable[[int, int], None] | None = None) -> int:
    """Send ``records`` in order to ``prefix + record.topic``; return how many the broker acked.

    ``rate`` caps events/s; ``progress(done, total)`` is called about once a second and at the end.
    """
    items = list(records)
    producer = new_producer(bootstrap)
    done, pending = 0, []
    began = last_report = time.monotonic()
    try:
        await start_client(producer, bootstrap)
        for i, record in enumerate(items):
            if rate:
                ahead = began + i / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            pending.append(await producer.send(prefix + record.topic, orjson.dumps(record.value),
                                               key=record.key.encode()))
            if len(pending) >= 2000 or (rate and len(pending) >= max(1, int(rate // 10))):
                await asyncio.gather(*pending)
                done, pending = done + len(pending), []
            if progress and time.monotonic() - last_report >= 1.0:
                last_report = time.monotonic()
                progress(done, len(items))
        await asyncio.gather(*pending)
        done += len(pending)
    finally:
        await producer.stop()
    if progress:
        progress(done, len(items))
    return done


async def ensure_topics(bootstrap: str, prefix: str = "", partitions: int = 3) -> None:
    """Create the contract topics and their ``.dlq`` topics where missing (full retention)."""
    from readside.schemas.registry import contract_topics
    from readside.shared.kafka import create_topics

    await create_topics(bootstrap, contract_topics(prefix), partitions)
