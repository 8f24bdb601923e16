"""The producing side: build, validate, route and send events the way the contract says.

For the demo, the test suites and any Python producer. :func:`make_event` refuses a payload its
model rejects, so whatever it builds, :func:`schemas.decode` accepts. Retrying a send must reuse
the same envelope (the same ``event_id``): consumers drop a seen ``event_id``, so that is what
makes a retry safe, and a fresh ``make_event`` would be a second event.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from schemas._base import id_problem
from schemas.registry import PAYLOAD_TYPES, SUPPORTED_SCHEMA_VERSION, TOPICS, topic_of

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer
    from aiokafka.structs import RecordMetadata

__all__ = ["Publisher", "encode", "make_event", "route"]


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


class Publisher:
    """Sends contract events through an already-started ``AIOKafkaProducer`` (not owned: the
    caller starts and stops it)."""

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
    ) -> RecordMetadata:
        """Make, validate, route and send one event; returns once the broker acknowledged it.

        To retry after a failure, call again with the same ``event_id``.
        """
        envelope = make_event(type, payload, event_id=event_id, occurred_at=occurred_at)
        topic, key = route(type, payload, self._prefix)
        return await self._producer.send_and_wait(topic, value=encode(envelope), key=key)
