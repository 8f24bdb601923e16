"""readside.schemas.publisher: the caller's event id is kept (safe retries), and ``publish`` hands back the
read-your-writes token the query API's ``X-Readside-After`` takes.

The producer here records what it is given and answers like aiokafka's; the same path against
the real broker and API is ``tests/e2e/test_publisher.py``.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.structs import RecordMetadata, TopicPartition

from readside.schemas import Event, Published, Publisher, decode, read_after

PAYLOAD = {"request_id": "r-1", "technician_id": "u-3", "taken_at": "2026-11-22T10:00:00Z"}


class _Producer:
    """Puts every record on partition 2, offsets from 40 on."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> RecordMetadata:
        self.sent.append((topic, value, key))
        offset = 39 + len(self.sent)
        return RecordMetadata(topic, 2, TopicPartition(topic, 2), offset, 1_700_000_000_000, 0, 0)


def _publish(publisher: Publisher, **kwargs: object) -> Published:
    return asyncio.run(publisher.publish("request.taken", PAYLOAD, **kwargs))  # type: ignore[arg-type]


def test_publish_returns_the_event_id_and_the_read_your_writes_token() -> None:
    producer = _Producer()
    published = _publish(Publisher(producer, prefix="prod."), event_id="e-7")  # type: ignore[arg-type]
    assert published.event_id == "e-7"
    assert (published.topic, published.partition, published.offset) == ("prod.requests.events", 2, 40)
    assert published.timestamp == 1_700_000_000_000
    assert published.token == "prod.requests.events:2:40"
    assert published.metadata.offset == 40  # aiokafka's RecordMetadata, as returned before
    [(topic, value, key)] = producer.sent
    event = decode("requests.events", key, value)
    assert isinstance(event, Event) and event.event_id == "e-7" and topic == "prod.requests.events"


def test_a_made_event_id_is_returned_so_the_caller_can_retry_with_it() -> None:
    producer = _Producer()
    publisher = Publisher(producer)  # type: ignore[arg-type]
    first = _publish(publisher)
    uuid.UUID(first.event_id)  # a fresh UUID4 when none is given
    retry = _publish(publisher, event_id=first.event_id)
    ids = [decode("requests.events", key, value).event_id for _, value, key in producer.sent]  # type: ignore[union-attr]
    assert ids == [first.event_id, first.event_id]
    assert retry.event_id == first.event_id and retry.offset == first.offset + 1


def test_an_invalid_event_is_refused_before_anything_is_sent() -> None:
    producer = _Producer()
    with pytest.raises(ValueError, match="technician_id"):
        asyncio.run(Publisher(producer).publish("request.taken", {**PAYLOAD, "technician_id": None}))  # type: ignore[arg-type]
    assert producer.sent == []


def test_read_after_keeps_the_greatest_offset_per_partition() -> None:
    a = Published("e-1", "threads.events", 0, 7)
    b = Published("e-2", "threads.events", 0, 9)
    c = Published("e-3", "payments.events", 1, 3)
    d = Published("e-4", "threads.events", 1, 2)
    assert read_after(b, c, a, d) == "threads.events:0:9,payments.events:1:3,threads.events:1:2"
    assert read_after(a) == a.token == "threads.events:0:7"
    with pytest.raises(ValueError):
        read_after()

