"""The event contract of Readside (contract section 1), as code.

- Payload models, one module per topic (``threads``, ``payments``, ``requests``,
  ``providers``, ``workflows``): strict (no coercion), frozen, unknown fields ignored.
- :func:`decode` turns a record (base topic, key, value bytes) into an :class:`Event` with a
  typed payload, an :class:`UnknownEvent` (skip and count), or raises :class:`InvalidEvent`
  (dead-letter with its ``reason``).
- :func:`make_event`, :func:`encode`, :func:`route` and :class:`Publisher` produce records that
  :func:`decode` accepts; :meth:`Publisher.publish` returns a :class:`Published` (event id,
  position, read-your-writes ``token``; :func:`read_after` joins several).
- :func:`envelope_json_schema` publishes the whole contract as one JSON Schema document.
"""

from __future__ import annotations

from readside.schemas._base import id_problem, parse_rfc3339
from readside.schemas.envelope import (
    PAYLOAD_TYPES,
    SUPPORTED_SCHEMA_VERSION,
    TOPICS,
    UPCASTERS,
    Event,
    InvalidEvent,
    UnknownEvent,
    decode,
    envelope_json_schema,
)
from readside.schemas.payments import PaymentReceived
from readside.schemas.providers import BookingConfirmed, ProviderProfileUpdated, ReviewPosted
from readside.schemas.publisher import Published, Publisher, encode, make_event, read_after, route
from readside.schemas.requests import (
    RequestAssigned,
    RequestChanges,
    RequestCreated,
    RequestMessageCreated,
    RequestMessageRead,
    RequestTaken,
    RequestUpdated,
)
from readside.schemas.threads import (
    Attachment,
    MessageCreated,
    MessageDeleted,
    MessageRead,
    Participant,
    ProviderParticipant,
    ThreadPinned,
    ThreadStarted,
    ThreadStateChanged,
)
from readside.schemas.workflows import WorkflowCreated, WorkflowDeleted, WorkflowVersionSaved

__all__ = [
    "Attachment",
    "BookingConfirmed",
    "Event",
    "InvalidEvent",
    "MessageCreated",
    "MessageDeleted",
    "MessageRead",
    "PAYLOAD_TYPES",
    "Participant",
    "PaymentReceived",
    "ProviderParticipant",
    "ProviderProfileUpdated",
    "Published",
    "Publisher",
    "RequestAssigned",
    "RequestChanges",
    "RequestCreated",
    "RequestMessageCreated",
    "RequestMessageRead",
    "RequestTaken",
    "RequestUpdated",
    "ReviewPosted",
    "SUPPORTED_SCHEMA_VERSION",
    "TOPICS",
    "ThreadPinned",
    "ThreadStarted",
    "ThreadStateChanged",
    "UPCASTERS",
    "UnknownEvent",
    "WorkflowCreated",
    "WorkflowDeleted",
    "WorkflowVersionSaved",
    "decode",
    "encode",
    "envelope_json_schema",
    "id_problem",
    "make_event",
    "parse_rfc3339",
    "read_after",
    "route",
]
