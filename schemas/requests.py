"""Payloads of topic ``requests.events`` (record key: ``request_id``).

Support-desk requests. ``business_unit_id`` is an integer; ``parent_id`` is null for a
top-level request and set for a subtask. ``request.updated`` carries a patch whose every key is
optional but, when present, must hold a valid non-null value; an unknown key makes the whole
event invalid (unlike everywhere else, where unknown fields are ignored), because a reader that
skipped it would silently miss a change.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, field_validator
from pydantic_core import PydanticCustomError

from readside.schemas._base import Id, Payload, Timestamp

__all__ = [
    "RequestAssigned",
    "RequestChanges",
    "RequestCreated",
    "RequestMessageCreated",
    "RequestMessageRead",
    "RequestTaken",
    "RequestUpdated",
]

Priority = Literal["low", "normal", "high", "urgent"]
Status = Literal[
    "new", "open", "in_progress", "pending_requester", "pending_subtask", "solved", "closed"
]
Role = Literal["requester", "technician"]


class RequestCreated(Payload):
    """``request.created``: a request created as ``solved`` is solved at ``created_at``."""

    request_id: Id
    requester_id: Id
    business_unit_id: int
    title: str
    priority: Priority
    status: Status
    parent_id: Id | None
    created_at: Timestamp


def _absent_not_null(schema: dict[str, Any]) -> None:
    # The fields are typed `X | None` so that None can mean "absent", but null is not a valid
    # value on the wire: publish the schema without the null branch and the None default.
    for prop in schema.get("properties", {}).values():
        options = [o for o in prop.pop("anyOf", []) if o != {"type": "null"}]
        if len(options) == 1:
            prop.update(options[0])
        elif options:
            prop["anyOf"] = options
        prop.pop("default", None)


class RequestChanges(Payload):
    """The patch of ``request.updated``: only the keys sent changed; None means "not sent".

    ``model_fields_set`` names the keys sent. ``{}`` is a valid (no-op) patch.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_absent_not_null)

    status: Status | None = None
    priority: Priority | None = None
    title: str | None = None
    business_unit_id: int | None = None

    @field_validator("status", "priority", "title", "business_unit_id", mode="before")
    @classmethod
    def _present_means_not_null(cls, value: object) -> object:
        # Runs only for keys that were sent: defaults are not validated.
        if value is None:
            raise PydanticCustomError("not_null", "Input may be absent but not null")
        return value


class RequestUpdated(Payload):
    """``request.updated``: moving to ``solved`` sets ``solved_at``; moving away clears it."""

    request_id: Id
    changes: RequestChanges
    updated_at: Timestamp


class RequestAssigned(Payload):
    """``request.assigned``: ``assignee_ids`` is the full new set (may be empty)."""

    request_id: Id
    assignee_ids: list[Id]
    assigned_at: Timestamp


class RequestTaken(Payload):
    """``request.taken``: adds ``technician_id`` to the assignees."""

    request_id: Id
    technician_id: Id
    taken_at: Timestamp


class RequestMessageCreated(Payload):
    request_id: Id
    message_id: Id
    sender_id: Id
    sender_role: Role
    content: str
    created_at: Timestamp


class RequestMessageRead(Payload):
    """``request.message_read``: messages with ``created_at <= read_up_to`` are read."""

    request_id: Id
    reader_id: Id
    reader_role: Role
    read_up_to: Timestamp
    read_at: Timestamp
