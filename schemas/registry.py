"""The registry of what exists: topics, the event types each carries, and their payload models.

This is section 1 of the contract as data. A new event type is added here and in its topic's
payload module; a new schema version adds its upcaster to :data:`UPCASTERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from readside.schemas.payments import PaymentReceived
from readside.schemas.providers import BookingConfirmed, ProviderProfileUpdated, ReviewPosted
from readside.schemas.requests import (
    RequestAssigned,
    RequestCreated,
    RequestMessageCreated,
    RequestMessageRead,
    RequestTaken,
    RequestUpdated,
)
from readside.schemas.threads import (
    MessageCreated,
    MessageDeleted,
    MessageRead,
    ThreadPinned,
    ThreadStarted,
    ThreadStateChanged,
)
from readside.schemas.workflows import WorkflowCreated, WorkflowDeleted, WorkflowVersionSaved

__all__ = ["PAYLOAD_TYPES", "SUPPORTED_SCHEMA_VERSION", "TOPICS", "UPCASTERS", "contract_topics", "topic_of"]

SUPPORTED_SCHEMA_VERSION = 1

PAYLOAD_TYPES: dict[str, type[BaseModel]] = {
    "thread.started": ThreadStarted,
    "message.created": MessageCreated,
    "message.read": MessageRead,
    "message.deleted": MessageDeleted,
    "thread.state_changed": ThreadStateChanged,
    "thread.pinned": ThreadPinned,
    "payment.received": PaymentReceived,
    "request.created": RequestCreated,
    "request.updated": RequestUpdated,
    "request.assigned": RequestAssigned,
    "request.taken": RequestTaken,
    "request.message_created": RequestMessageCreated,
    "request.message_read": RequestMessageRead,
    "provider.profile_updated": ProviderProfileUpdated,
    "booking.confirmed": BookingConfirmed,
    "review.posted": ReviewPosted,
    "workflow.created": WorkflowCreated,
    "workflow.version_saved": WorkflowVersionSaved,
    "workflow.deleted": WorkflowDeleted,
}
"""Event type → payload model. A type not listed here is unknown (skipped, not dead-lettered)."""

TOPICS: dict[str, tuple[str, frozenset[str]]] = {
    "threads.events": (
        "thread_id",
        frozenset(
            {
                "thread.started",
                "message.created",
                "message.read",
                "message.deleted",
                "thread.state_changed",
                "thread.pinned",
            }
        ),
    ),
    "payments.events": ("thread_id", frozenset({"payment.received"})),
    "requests.events": (
        "request_id",
        frozenset(
            {
                "request.created",
                "request.updated",
                "request.assigned",
                "request.taken",
                "request.message_created",
                "request.message_read",
            }
        ),
    ),
    "providers.events": (
        "provider_id",
        frozenset({"provider.profile_updated", "booking.confirmed", "review.posted"}),
    ),
    "workflows.events": (
        "workflow_id",
        frozenset({"workflow.created", "workflow.version_saved", "workflow.deleted"}),
    ),
}
"""Base topic name (before any prefix) → (record key field of the payload, event types carried)."""

UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}
"""Where older schema versions are upgraded: ``(type, n)`` → a pure function taking a payload
of version ``n`` and returning it as version ``n + 1``. :func:`decode` chains them up to
:data:`SUPPORTED_SCHEMA_VERSION`; a version with no path there is unsupported. Empty while
version 1 is the only one that exists."""

# Event type → its base topic; the topics are disjoint.
_TOPIC_OF_TYPE: dict[str, str] = {t: topic for topic, (_, types) in TOPICS.items() for t in types}


def topic_of(event_type: str) -> str:
    """The base topic that carries ``event_type``; ``KeyError`` for an unknown type."""
    return _TOPIC_OF_TYPE[event_type]


def contract_topics(prefix: str = "") -> list[str]:
    """The contract's topics (:data:`TOPICS`) under ``prefix``, then their ``.dlq`` topics: what
    ``readside.shared.kafka.create_topics`` makes before a projector, the demo or a test starts."""
    names = [prefix + topic for topic in TOPICS]
    return names + [name + ".dlq" for name in names]
