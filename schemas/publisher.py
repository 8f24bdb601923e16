"""The producing side: build, validate, route and send events the way the contract says.

For the core app, the demo, the test suites and any Python producer (guide:
``docs/publishing.md``). :func:`make_event` refuses a payload its model rejects, so whatever it
builds, :func:`readside.schemas.decode` accepts. Retrying a send must reuse the same ``event_id``:
consumers drop a seen ``event_id``, so that is what makes a retry safe, and a fresh
``make_event`` would be a second event.

:meth:`Publisher.publish` returns a :class:`Published`: the event's id (the one given, or the
one made) and where the broker put it. ``Published.token`` — or :func:`read_after` for several —
is the value of the query API's ``X-Readside-After`` header (read-your-writes).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from readside.schemas._base import id_problem
from readside.schemas.registry import PAYLOAD_TYPES, SUPPORTED_SCHEMA_VERSION, TOPICS, topic_of
from readside.shared.limits import MAX_RECORD_BYTES

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer
    from aiokafka.structs import RecordMetadata

__all__ = ["MAX_REQUEST_BYTES", "Published", "Publisher", "encode", "make_event", "read_after", "route"]

MAX_REQUEST_BYTES = MAX_RECORD_BYTES  # the topics are made to hold records this large
"""The producer's ``max_request_size`` in :meth:`Publisher.connect`: workflow payloads reach
1 MB, and the topics are created with ``max.message.bytes`` of 4 MiB (at least 2 MiB needed)."""


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_event(
    type: str,
    payload: Mapping[str, Any],
    *,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """A schema-version-1 envelope for ``payload``, as a plain dict ready for :func:`encode`.

    ``event_id`` defaults to a new UUID4, ``occurred_at`` (aware) to now; it is written in UTC
    with millisecond precision. The payload is kept as given (a shallow copy; extra fields
    stay) once its model accepts it. Payload times may be RFC 3339 strings or aware datetimes.

    Raises ``ValueError`` for an unknown type, an invalid payload (with pydantic's message), an
    ``event_id`` that is not an id (1 to 200 characters, no control characters) or a naive
    ``occurred_at``.
    """
    model = PAYLOAD_TYPES.get(type)
    if model is None:
        raise ValueError(f"unknown event type {type!r}")
    try:
        model.model_validate(payload)
    except ValidationError as exc:
        raise ValueError(f"invalid {type} payload: {exc}") from exc
    if event_id is not None and (not isinstance(event_id, str) or id_problem(event_id) is not None):
        problem = "be a string" if not isinstance(event_id, str) else id_problem(event_id)
        raise ValueError(f"event_id must {problem}")
    if occurred_at is None:
        occurred_at = datetime.now(UTC)
    elif occurred_at.tzinfo is None or occurred_at.utcoffset() is None:
        raise ValueError("occurred_at must be timezone-aware")
    return {
        "event_id": event_id if event_id is not None else str(uuid.uuid4()),
        "type": type,
        "schema_version": SUPPORTED_SCHEMA_VERSION,
        "occurred_at": _rfc3339(occurred_at),
        "payload": dict(payload),
    }


def encode(envelope: Mapping[str, Any]) -> bytes:
    """The record value: compact UTF-8 JSON; aware datetimes in the payload become RFC 3339."""
    return orjson.dumps(envelope, option=orjson.OPT_UTC_Z)


def route(type: str, payload: Mapping[str, Any], prefix: str = "") -> tuple[str, bytes]:
    """``(full topic name, record key)`` for an event: the prefix is concatenated as is
    (``"prod."`` + ``"threads.events"``) and the key is the payload's aggregate id in UTF-8."""
    try:
        topic = topic_of(type)
    except KeyError:
        raise ValueError(f"unknown event type {type!r}") from None
    key_field = TOPICS[topic][0]
    key = payload.get(key_field)
    if not isinstance(key, str):
        raise ValueError(f"{type} payload has no string {key_field!r} to use as record key")
    return prefix + topic, key.encode("utf-8")


@dataclass(frozen=True, slots=True)
class Published:
    """One event the broker acknowledged: its id and its position.

    ``topic`` is the full topic name (prefix included), as the API expects it. ``topic``,
    ``partition``, ``offset`` and ``timestamp`` have the names and meanings of aiokafka's
    ``RecordMetadata`` (which :meth:`Publisher.publish` returned before), kept whole in
    ``metadata``.
    """

    event_id: str
    topic: str
    partition: int
    offset: int
    timestamp: int | None = None  # the record's timestamp, ms since the epoch
    metadata: Any = field(default=None, repr=False, compare=False)

    @property
    def token(self) -> str:
        """The read-your-writes token of this event: ``<topic>:<partition>:<offset>``, the value
        of ``X-Readside-After`` for a read that must include it."""
        return f"{self.topic}:{self.partition}:{self.offset}"


def read_after(*published: Published) -> str:
    """The ``X-Readside-After`` value for a read that must include every one of ``published``:
    comma-separated tokens, one per (topic, partition) — the greatest offset of each, which
    implies the earlier ones (a projection commits a partition in order). Raises ``ValueError``
    when given nothing."""
    if not published:
        raise ValueError("read_after needs at least one published event")
    greatest: dict[tuple[str, int], int] = {}
    for p in published:
        where = (p.topic, p.partition)
        greatest[where] = max(p.offset, greatest.get(where, p.offset))
    return ",".join(f"{t}:{part}:{offset}" for (t, part), offset in greatest.items())


class Publisher:
    """Sends contract events through an already-started ``AIOKafkaProducer`` (not owned: the
    caller starts and stops it), or through one of its own with :meth:`connect`.

    The producer must accept records of up to 2 MiB (``max_request_size``; workflow payloads
    reach 1 MB) and should wait for every in-sync replica (``acks="all"``): :meth:`connect` sets
    both.
    """

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, bootstrap_servers: str, *, prefix: str = "", **options: Any) -> AsyncIterator[Publisher]:
        """A publisher with a producer of its own, started on entry and stopped (pending sends
        flushed) on exit. ``options`` go to ``AIOKafkaProducer`` over the defaults
        ``acks="all"`` and ``max_request_size`` = :data:`MAX_REQUEST_BYTES`; ``prefix`` is the
        deployment's ``READSIDE_TOPIC_PREFIX``."""
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            **({"acks": "all", "max_request_size": MAX_REQUEST_BYTES} | options),
        )
        await producer.start()
        try:
            yield cls(producer, prefix=prefix)
        finally:
            await producer.stop()

    def __init__(self, producer: AIOKafkaProducer, *, prefix: str = "") -> None:
        self._producer = producer
        self._prefix = prefix

    def __repr__(self) -> str:
        return f"Publisher(prefix={self._prefix!r})"

    async def publish(
        self,
        type: str,
        payload: Mapping[str, Any],
        *,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> Published:
        """Make, validate, route and send one event; returns once the broker acknowledged it,
        with the event's id and position (``.token`` for ``X-Readside-After``).

        ``event_id`` defaults to a new UUID4. To retry after a failure (a timeout does not say
        whether the broker kept the record), call again with the same ``event_id``: if both
        copies landed, readers apply the first and skip the other. Raises ``ValueError`` before
        sending anything for an event :func:`make_event` refuses; the producer's errors
        (``aiokafka.errors.KafkaError``) pass through.
        """
        envelope = make_event(type, payload, event_id=event_id, occurred_at=occurred_at)
        topic, key = route(type, payload, self._prefix)
        meta: RecordMetadata = await self._producer.send_and_wait(topic, value=encode(envelope), key=key)
        timestamp = getattr(meta, "timestamp", None)
        return Published(
            envelope["event_id"], meta.topic, meta.partition, meta.offset,
            timestamp if isinstance(timestamp, int) and timestamp >= 0 else None, meta,
        )
