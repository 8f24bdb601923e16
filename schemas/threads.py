"""Payloads of topic ``threads.events`` (record key: ``thread_id``).

A marketplace thread is a booking request and its conversation between a client and a
provider. Every field is required; the only nullable ones are those the contract allows:
``avatar_url``, ``business_name``, ``system_key``, ``system_args``, ``attachment``, and
``sender_id`` when (and only when) ``sender_type`` is ``system``. ``service_type`` and a
thread's ``state`` are open strings; every other value set is closed.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from readside.schemas._base import Id, Payload, Timestamp

__all__ = [
    "Attachment",
    "MessageCreated",
    "MessageDeleted",
    "MessageRead",
    "Participant",
    "ProviderParticipant",
    "ThreadPinned",
    "ThreadStarted",
    "ThreadStateChanged",
]

SenderType = Literal["client", "provider", "system"]
MessageType = Literal["user", "system"]
VisibleTo = Literal["both", "client", "provider"]
AttachmentKind = Literal["image", "file"]


class Participant(Payload):
    """The client of a thread, as ``thread.started`` names them."""

    id: Id
    name: str
    avatar_url: str | None


class ProviderParticipant(Participant):
    """The provider of a thread; ``business_name`` (if any) is shown to the client."""

    business_name: str | None


class ThreadStarted(Payload):
    """``thread.started``: a second one for the same thread is ignored (first wins)."""

    thread_id: Id
    client: Participant
    provider: ProviderParticipant
    service_type: str
    state: str
    created_at: Timestamp


class Attachment(Payload):
    kind: AttachmentKind
    url: str


class MessageCreated(Payload):
    """``message.created``.

    ``system_args`` is any JSON object; for ``system_key`` ``event_reminder`` producers send
    ``{"days_before": int, "date": "YYYY-MM-DD"}``, which this model does not enforce.
    ``sender_id`` is null only when ``sender_type`` is ``system``: the validator below, and the
    same rule as ``if``/``then`` in the exported JSON Schema.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"sender_id": {"type": "null"}}, "required": ["sender_id"]},
            "then": {"properties": {"sender_type": {"const": "system"}}},
        }
    )

    thread_id: Id
    message_id: Id
    sender_id: Id | None
    sender_type: SenderType
    message_type: MessageType
    visible_to: VisibleTo
    content: str
    system_key: str | None
    system_args: dict[str, Any] | None
    attachment: Attachment | None
    created_at: Timestamp

    @model_validator(mode="after")
    def _sender_id_null_only_for_system(self) -> Self:
        if self.sender_id is None and self.sender_type != "system":
            raise PydanticCustomError(
                "sender_id_required",
                "sender_id: must be a string when sender_type is '{sender_type}'"
                " (null only for system messages)",
                {"sender_type": self.sender_type},
            )
        return self


class MessageRead(Payload):
    """``message.read``: every message with ``created_at <= read_up_to`` is read by ``reader_id``."""

    thread_id: Id
    reader_id: Id
    read_up_to: Timestamp
    read_at: Timestamp


class MessageDeleted(Payload):
    """``message.deleted``: the message counts as never sent."""

    thread_id: Id
    message_id: Id
    deleted_at: Timestamp


class ThreadStateChanged(Payload):
    thread_id: Id
    state: str
    changed_at: Timestamp


class ThreadPinned(Payload):
    """``thread.pinned``: per user; the value with the latest ``changed_at`` holds."""

    thread_id: Id
    user_id: Id
    pinned: bool
    changed_at: Timestamp
