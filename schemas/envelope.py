"""The envelope decoder: Kafka record bytes in, a typed event out.

Every record value is one JSON object ``{event_id, type, schema_version, occurred_at, payload}``
and its key is the aggregate id named for its topic (:data:`TOPICS`). :func:`decode` checks, in
this order, and stops at the first failure:

1. the value is a JSON object;
2. the envelope: ``event_id`` an id (1 to 200 characters, no control characters), ``type`` a
   non-empty string, ``schema_version`` an integer (``true`` and ``"1"`` are not),
   ``occurred_at`` an RFC 3339 time with offset within years 1..9999 in UTC, ``payload`` an
   object — every field required, extra fields ignored;
3. an unknown ``type`` is returned as :class:`UnknownEvent` (tolerant reader: skip and count);
4. the topic carries the type;
5. ``schema_version`` is supported (1), or :data:`UPCASTERS` lift the payload to it;
6. the payload validates against its model (:data:`PAYLOAD_TYPES`), ids and times bounded
   as the envelope's (``readside.schemas._base.Id``, ``Timestamp``);
7. the record key, as UTF-8, equals the payload's aggregate id (a missing key is a mismatch).

Any failure raises :class:`InvalidEvent` whose ``reason`` goes to the dead-letter header; so
does any other exception raised while decoding a record (a decoder bug must cost one record,
never the projection). Reasons are at most :data:`REASON_MAX` characters, control characters
escaped.
The registry (:data:`TOPICS`, :data:`PAYLOAD_TYPES`, :data:`UPCASTERS`) lives in
``readside.schemas.registry`` and is re-exported here.
An unknown ``schema_version`` of an unknown type is still just an unknown event: the contract
dead-letters unsupported versions of *known* types only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from readside.schemas import _fast
from readside.schemas._base import ID_MAX, ID_PATTERN, RFC3339_PATTERN, id_problem, parse_rfc3339, rfc3339_problem
from readside.schemas.registry import (
    PAYLOAD_TYPES,
    SUPPORTED_SCHEMA_VERSION,
    TOPICS,
    UPCASTERS,
    topic_of,
)
from readside.shared.errors import RecordFault

__all__ = [
    "Event",
    "InvalidEvent",
    "PAYLOAD_TYPES",
    "REASON_MAX",
    "SUPPORTED_SCHEMA_VERSION",
    "TOPICS",
    "UPCASTERS",
    "UnknownEvent",
    "decode",
    "envelope_json_schema",
]


@dataclass(frozen=True, slots=True)
class Event:
    """A valid event of a known type; ``payload`` is an instance of ``PAYLOAD_TYPES[type]``."""

    event_id: str
    type: str
    occurred_at: datetime
    payload: BaseModel


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """A well-formed envelope of a type this version does not know: skip it and count it."""

    event_id: str | None
    type: str


REASON_MAX = 1000
"""The longest dead-letter reason: it travels in a Kafka header and a ``text`` column."""

_CONTROLS = {i: f"\\x{i:02x}" for i in [*range(0x20), *range(0x7F, 0xA0)]}


def clean_reason(reason: str) -> str:
    """``reason`` safe for a header, a log line and a ``text`` column: control characters
    escaped (``\\x00``), at most :data:`REASON_MAX` characters."""
    reason = reason.translate(_CONTROLS)
    return reason if len(reason) <= REASON_MAX else reason[: REASON_MAX - 1] + "…"


class InvalidEvent(RecordFault):
    """A poison record: it goes to ``<topic>.dlq`` with ``reason`` and the original bytes.

    ``event_id`` and ``type`` are set when the envelope got far enough to name them (for logs).
    ``reason`` is cleaned (:func:`clean_reason`).
    """

    def __init__(self, reason: str, *, event_id: str | None = None, type: str | None = None) -> None:
        reason = clean_reason(reason)
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id
        self.type = type


def _clip(value: str, limit: int = 80) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _kind(value: object) -> str:
    if value == "":
        return "an empty string"
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _loc(part: str | int) -> str:
    # a location may name a key of the record (an unknown key of `changes`): clip a long one
    return part if isinstance(part, str) and len(part) <= 40 else _clip(part, 40) if isinstance(part, str) else str(part)


def _describe(exc: ValidationError, limit: int = 3) -> str:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    parts = []
    for error in errors[:limit]:
        where = ".".join(_loc(p) for p in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more


def _field(envelope: dict[str, Any], name: str, want: type, label: str) -> Any:
    if name not in envelope:
        raise InvalidEvent(f"envelope: missing field {name!r}")
    value = envelope[name]
    # `type(value) is int` keeps out bools, which are ints to isinstance.
    if type(value) is not want or (want is str and not value):
        raise InvalidEvent(f"envelope: {name!r} must be {label}, got {_kind(value)}")
    return value


def decode(topic: str, key: bytes | None, value: bytes | None) -> Event | UnknownEvent:
    """Decode one record of base topic ``topic`` (the name without the configured prefix).

    Returns an :class:`Event`, or an :class:`UnknownEvent` for a type not in
    :data:`PAYLOAD_TYPES`. Raises :class:`InvalidEvent` for a poison record (see the module
    docstring for the checks), and ``ValueError`` for a topic that is not in :data:`TOPICS`
    (a wiring mistake, not a bad record). A ``None`` value (a tombstone) is invalid.
    """
    if topic not in TOPICS:
        raise ValueError(f"unknown topic {topic!r}; expected one of {sorted(TOPICS)}")
    fast = _fast.decode(topic, key, value)
    if fast is not None:
        return Event(*fast)
    return reference_decode(topic, key, value)


def reference_decode(topic: str, key: bytes | None, value: bytes | None) -> Event | UnknownEvent:
    """:func:`decode` by the pydantic models alone: the reference the fast path
    (``readside.schemas._fast``) must agree with, and the path of every record it does not
    vouch for (so every reason comes from here)."""
    if topic not in TOPICS:
        raise ValueError(f"unknown topic {topic!r}; expected one of {sorted(TOPICS)}")
    try:
        return _decode(topic, key, value)
    except (InvalidEvent, MemoryError):  # memory is the machine's, not the record's: retried
        raise
    except Exception as exc:
        raise InvalidEvent(f"decoder error: {exc!r}") from exc


def _decode(topic: str, key: bytes | None, value: bytes | None) -> Event | UnknownEvent:
    if value is None:
        raise InvalidEvent("not JSON: empty record value (tombstone)")
    try:
        envelope = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    if type(envelope) is not dict:
        raise InvalidEvent(f"envelope: must be a JSON object, got {_kind(envelope)}")

    event_id: str = _field(envelope, "event_id", str, "a non-empty string")
    problem = id_problem(event_id)
    if problem is not None:
        raise InvalidEvent(f"envelope: 'event_id' must {problem}: {_clip(event_id)}")
    event_type: str = _field(envelope, "type", str, "a non-empty string")
    version: int = _field(envelope, "schema_version", int, "an integer")
    occurred_raw: str = _field(envelope, "occurred_at", str, "an RFC 3339 time string")
    occurred_at = parse_rfc3339(occurred_raw)
    if occurred_at is None:
        raise InvalidEvent(
            f"envelope: 'occurred_at' must be {rfc3339_problem(occurred_raw)}, got {_clip(occurred_raw)}",
            event_id=event_id,
            type=event_type,
        )
    payload: dict[str, Any] = _field(envelope, "payload", dict, "an object")

    model = PAYLOAD_TYPES.get(event_type)
    if model is None:
        return UnknownEvent(event_id, event_type)

    def invalid(reason: str) -> InvalidEvent:
        return InvalidEvent(reason, event_id=event_id, type=event_type)

    key_field, carried = TOPICS[topic]
    if event_type not in carried:
        raise invalid(f"type {event_type!r} is not carried by topic {topic!r}")

    while version != SUPPORTED_SCHEMA_VERSION:
        upcast = UPCASTERS.get((event_type, version))
        if upcast is None:
            raise invalid(f"unsupported schema_version {version}")
        payload = upcast(payload)
        version += 1

    try:
        typed = model.model_validate(payload)
    except ValidationError as exc:
        raise invalid(f"payload: {_describe(exc)}") from None

    aggregate_id: str = getattr(typed, key_field)
    if key is None:
        raise invalid(f"record key is missing; expected payload {key_field} {_clip(aggregate_id)}")
    try:
        key_text = key.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid("record key is not UTF-8") from None
    if key_text != aggregate_id:
        raise invalid(
            f"record key {_clip(key_text)} differs from payload {key_field} {_clip(aggregate_id)}"
        )
    return Event(event_id, event_type, occurred_at, typed)


NOT_IN_JSON_SCHEMA: dict[str, str] = {
    "record-key": "the record key equals the payload's aggregate id (the key is not in the value)",
    "unknown-type": "a type this version does not know is skipped and counted, not dead-lettered; "
    "the schema, which lists the known types, rejects it",
    "calendar": "a day that does not exist in its month (2026-02-30, 2027-02-29)",
    "utc-range": "a time within years 0001..9999 once converted to UTC "
    "(0001-01-01T00:00:00+01:00 is before year 1)",
    "integral-float": "an integer written with a fraction (5.0): the same number as 5 to JSON Schema, "
    "not an integer to the decoder",
    "not-json": "a value that is not JSON (or no value: a tombstone) has nothing to validate",
}
"""What :func:`decode` checks that the exported JSON Schema cannot say, by name. Everything else —
shapes, closed value sets, bounds of ids, the RFC 3339 form of times, the topic's types (with
``topic``), ``sender_id`` null only for system messages — both check alike."""


def envelope_json_schema(topic: str | None = None) -> dict[str, Any]:
    """One JSON Schema (2020-12) document for every record value: a ``oneOf`` of one envelope
    per event type, told apart by the ``const`` of ``type``, with the payloads in ``$defs``.
    With ``topic`` (a base topic name), only the types that topic carries.

    The schema states shapes, the bounds of ids (``minLength``, ``maxLength``, ``pattern``), the
    form of times (``pattern``) and the cross-field rules (``message.created``: ``sender_id`` is
    null only for system messages, as ``if``/``then``); :func:`decode` additionally checks what
    :data:`NOT_IN_JSON_SCHEMA` lists.
    """
    if topic is not None and topic not in TOPICS:
        raise ValueError(f"unknown topic {topic!r}; expected one of {sorted(TOPICS)}")
    types = [t for t in PAYLOAD_TYPES if topic is None or t in TOPICS[topic][1]]
    models = list(dict.fromkeys(PAYLOAD_TYPES[t] for t in types))
    refs, top = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/$defs/{model}"
    )
    variants = []
    for event_type in types:
        model = PAYLOAD_TYPES[event_type]
        variants.append(
            {
                "title": f"{event_type} envelope",
                "description": f"Topic `{topic_of(event_type)}`; the record key is the payload's "
                f"`{TOPICS[topic_of(event_type)][0]}`.",
                "type": "object",
                "properties": {
                    "event_id": {"type": "string", "minLength": 1, "maxLength": ID_MAX, "pattern": ID_PATTERN},
                    "type": {"const": event_type},
                    "schema_version": {"type": "integer", "const": SUPPORTED_SCHEMA_VERSION},
                    "occurred_at": {"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN},
                    "payload": refs[(model, "validation")],
                },
                "required": ["event_id", "type", "schema_version", "occurred_at", "payload"],
            }
        )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Readside event envelope" + (f" on {topic}" if topic else ""),
        "description": "A Kafka record value. Unknown fields are allowed and ignored, except "
        "in RequestChanges. Times are RFC 3339 with an offset, within years 0001..9999 once "
        "converted to UTC. Ids are 1 to 200 characters without control characters. Not "
        "expressed here, checked by the decoder: " + "; ".join(NOT_IN_JSON_SCHEMA.values()) + ".",
        "oneOf": variants,
        "$defs": top["$defs"],
    }
