"""The live tables as the write pipeline's store, and dead letters on ``<topic>.dlq``.

``LiveStore`` keeps a projection's positions in ``checkpoints`` (advanced conditionally on where
the batch started: fencing), its seen ids in ``dedupe``, its failures in ``dead_letters`` and on
the dead-letter topics, and the cache scopes it changed in ``cache_outbox`` (when the projector
has a cache: readside.projector.outbox) — all before the batch commits: nothing is lost. A dead letter the topic
cannot hold (too large, or a keyless tombstone the client cannot send) is kept whole in the
table and announced on the topic by a small pointer record (:func:`pointer`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from uuid import UUID

import orjson
import psycopg
from aiokafka import AIOKafkaProducer

from readside.projector import bookkeeping, outbox
from readside.projector.pipeline import Batch, Record
from readside.shared.errors import RecordFault, translate

__all__ = ["POINTER_HEADER", "LiveStore", "pointer"]

log = logging.getLogger(__name__)

POINTER_HEADER = "readside-pointer"
POINTER_KEY_MAX = 1024  # a pointer keeps the record's key up to this size (else none)


def _too_large(exc: BaseException) -> bool:
    """The producer refusing one record for its size (client side) or the broker refusing it:
    the record's fault, not the broker's. Every other producer error is retried."""
    return isinstance(translate(exc), RecordFault)


class LiveStore:
    """In pipeline mode (``Pipeline.commit``) the checkpoints' statement goes out with the dedupe
    insert: its fencing check is read with the dedupe's answer, and at the latest before the
    batch's dead letters are sent or its bookkeeping is written (one batch at a time per store)."""

    pipelined = True  # no COPY here, nor in a projection's live apply

    def __init__(self, projection: str, producer: AIOKafkaProducer, *, outbox: bool = False) -> None:
        self.projection = projection
        self.producer = producer
        self.outbox = outbox  # keep each batch's changed cache scopes in ``cache_outbox``
        self._fence: Callable[[], Awaitable[None]] | None = None

    async def _fenced(self) -> None:
        """Raise :class:`FencedError` if this batch's checkpoints did not move (read once)."""
        check, self._fence = self._fence, None
        if check is not None:
            await check()

    async def record_positions(self, conn: psycopg.AsyncConnection, batch: Batch) -> None:
        self._fence = await bookkeeping.move_checkpoints(
            conn, self.projection, {key: (batch.starts[key], end) for key, end in batch.ends.items()}
        )

    async def first_seen(self, conn: psycopg.AsyncConnection, event_ids: list[str]) -> set[str]:
        new = await bookkeeping.first_seen(conn, self.projection, event_ids)
        await self._fenced()
        return new

    async def forget_seen(self, conn: psycopg.AsyncConnection, event_ids: list[str]) -> None:
        # Inserted by this very batch (the pipeline applies only ids it recorded as new).
        await bookkeeping.forget_seen(conn, self.projection, event_ids)

    async def record_changes(self, conn: psycopg.AsyncConnection, changed: set[str]) -> UUID | None:
        return await outbox.record(conn, self.projection, changed) if self.outbox else None

    async def finish(self, conn: psycopg.AsyncConnection, batch: Batch) -> None:
        await self._fenced()
        await bookkeeping.record_batch(conn, self.projection, batch.skipped)
        await bookkeeping.record_heads(conn, batch.heads)

    async def record_failures(self, conn: psycopg.AsyncConnection, dead: list[tuple[Record, str]]) -> None:
        """Record ``dead`` in the table, then send each to ``<topic>.dlq``."""
        await self._fenced()  # a fenced batch sends nothing
        ids = await bookkeeping.insert_dead_letters(
            conn, self.projection, [(r.topic, r.partition, r.offset, r.key, r.value, reason) for r, reason in dead]
        )
        sent: list[tuple[Record, str, int, asyncio.Future]] = []
        late: list[tuple[Record, str, int]] = []
        for record, reason in dead:
            letter_id = ids[record.origin]
            if record.value is None and record.key is None:
                late.append((record, reason, letter_id))  # aiokafka sends no record without both
                continue
            try:
                future = await self.producer.send(record.topic + ".dlq", record.value, key=record.key,
                                                  headers=_headers(record, reason))
            except Exception as exc:
                if not _too_large(exc):
                    raise
                late.append((record, reason, letter_id))
                continue
            sent.append((record, reason, letter_id, future))
        results = await asyncio.gather(*(f for *_, f in sent), return_exceptions=True)
        for (record, reason, letter_id, _), result in zip(sent, results, strict=True):
            if isinstance(result, BaseException):
                if not _too_large(result):
                    raise result  # the broker is down: the batch is retried
                late.append((record, reason, letter_id))
        if late:
            futures = []
            for record, reason, letter_id in late:
                key = record.key if record.key is not None and len(record.key) <= POINTER_KEY_MAX else None
                headers = _headers(record, reason) + [(POINTER_HEADER, b"dead-letter")]
                futures.append(await self.producer.send(
                    record.topic + ".dlq", pointer(self.projection, record, letter_id), key=key, headers=headers
                ))
            await asyncio.gather(*futures)
        log.warning("%s: dead-lettered %d record(s): %s", self.projection, len(dead), dead[0][1])


def _headers(record: Record, reason: str) -> list[tuple[str, bytes]]:
    return [
        ("readside-error", reason.encode()),
        ("readside-origin-topic", record.topic.encode()),
        ("readside-origin-partition", str(record.partition).encode()),
        ("readside-origin-offset", str(record.offset).encode()),
    ]


def pointer(projection: str, record: Record, dead_letter_id: int) -> bytes:
    """The small record that stands, on ``<topic>.dlq``, for a dead letter the topic cannot hold
    (larger than the producer's ``max_request_size`` or the topic's ``max.message.bytes``, or a
    tombstone without a key): where the whole record is (``readside dlq show <dead_letter_id>``).
    It carries the dead letter's headers plus ``readside-pointer: dead-letter``."""
    return orjson.dumps(
        {
            "dead_letter_id": dead_letter_id,
            "projection": projection,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "too_large": record.value is not None,
            "tombstone": record.value is None,
            "value_bytes": None if record.value is None else len(record.value),
            "key_bytes": None if record.key is None else len(record.key),
        }
    )
