"""schemas: every contract example decodes; every invalid record is rejected with its reason."""

from __future__ import annotations

import asyncio
import copy
import operator
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import readside.schemas
from readside.schemas import (
    PAYLOAD_TYPES,
    TOPICS,
    UPCASTERS,
    BookingConfirmed,
    Event,
    InvalidEvent,
    MessageCreated,
    MessageDeleted,
    MessageRead,
    PaymentReceived,
    ProviderProfileUpdated,
    Publisher,
    RequestAssigned,
    RequestCreated,
    RequestMessageCreated,
    RequestMessageRead,
    RequestTaken,
    RequestUpdated,
    ReviewPosted,
    ThreadPinned,
    ThreadStarted,
    ThreadStateChanged,
    UnknownEvent,
    WorkflowCreated,
    WorkflowDeleted,
    WorkflowVersionSaved,
    decode,
    encode,
    envelope_json_schema,
    make_event,
    route,
)
from readside.schemas._base import ID_PATTERN
from readside.schemas.envelope import REASON_MAX, clean_reason

T0 = "2026-11-22T10:00:00Z"
T1 = "2026-11-22T10:05:00Z"

# event type -> (topic, record key, payload model, the contract's example payload)
EXAMPLES: dict[str, tuple[str, bytes, type, dict[str, Any]]] = {
    "thread.started": ("threads.events", b"t-1", ThreadStarted, {
        "thread_id": "t-1",
        "client": {"id": "u-1", "name": "Ann Lee", "avatar_url": "https://cdn.example/a.jpg"},
        "provider": {"id": "u-2", "name": "Bob Khumalo", "business_name": "DJ Bob", "avatar_url": None},
        "service_type": "live_performance", "state": "pending_quote", "created_at": T0}),
    "message.created": ("threads.events", b"t-1", MessageCreated, {
        "thread_id": "t-1", "message_id": "m-9", "sender_id": "u-1", "sender_type": "client",
        "message_type": "user", "visible_to": "both", "content": "Hi! Are you free on the 5th?",
        "system_key": None, "system_args": None, "attachment": None, "created_at": T1}),
    "message.read": ("threads.events", b"t-1", MessageRead, {
        "thread_id": "t-1", "reader_id": "u-2", "read_up_to": T1, "read_at": "2026-11-22T10:06:00Z"}),
    "message.deleted": ("threads.events", b"t-1", MessageDeleted, {
        "thread_id": "t-1", "message_id": "m-9", "deleted_at": "2026-11-22T10:07:00Z"}),
    "thread.state_changed": ("threads.events", b"t-1", ThreadStateChanged, {
        "thread_id": "t-1", "state": "quoted", "changed_at": "2026-11-22T11:00:00Z"}),
    "thread.pinned": ("threads.events", b"t-1", ThreadPinned, {
        "thread_id": "t-1", "user_id": "u-1", "pinned": True, "changed_at": "2026-11-22T11:00:00Z"}),
    "payment.received": ("payments.events", b"t-1", PaymentReceived, {
        "thread_id": "t-1", "payment_id": "pay-1", "amount_cents": 250000, "currency": "ZAR",
        "received_at": "2026-11-23T09:00:00Z"}),
    "request.created": ("requests.events", b"r-1", RequestCreated, {
        "request_id": "r-1", "requester_id": "u-7", "business_unit_id": 3,
        "title": "Printer on floor 2 is offline", "priority": "normal", "status": "new",
        "parent_id": None, "created_at": "2026-11-22T08:00:00Z"}),
    "request.updated": ("requests.events", b"r-1", RequestUpdated, {
        "request_id": "r-1", "changes": {"status": "solved", "priority": "high"},
        "updated_at": "2026-11-22T09:00:00Z"}),
    "request.assigned": ("requests.events", b"r-1", RequestAssigned, {
        "request_id": "r-1", "assignee_ids": ["u-3", "u-4"], "assigned_at": "2026-11-22T08:10:00Z"}),
    "request.taken": ("requests.events", b"r-1", RequestTaken, {
        "request_id": "r-1", "technician_id": "u-3", "taken_at": "2026-11-22T08:20:00Z"}),
    "request.message_created": ("requests.events", b"r-1", RequestMessageCreated, {
        "request_id": "r-1", "message_id": "rm-1", "sender_id": "u-7", "sender_role": "requester",
        "content": "Still offline", "created_at": "2026-11-22T08:30:00Z"}),
    "request.message_read": ("requests.events", b"r-1", RequestMessageRead, {
        "request_id": "r-1", "reader_id": "u-3", "reader_role": "technician",
        "read_up_to": "2026-11-22T08:30:00Z", "read_at": "2026-11-22T08:31:00Z"}),
    "provider.profile_updated": ("providers.events", b"p-1", ProviderProfileUpdated, {
        "provider_id": "p-1", "business_name": "DJ Bob", "avatar_url": "https://cdn.example/b.jpg",
        "category": "DJ", "location": "Cape Town", "hourly_rate_cents": 150000,
        "price_visible": True, "custom_subtitle": None, "status": "active",
        "updated_at": "2026-11-01T09:00:00Z"}),
    "booking.confirmed": ("providers.events", b"p-1", BookingConfirmed, {
        "provider_id": "p-1", "booking_id": "b-1", "confirmed_at": "2026-11-02T09:00:00Z"}),
    "review.posted": ("providers.events", b"p-1", ReviewPosted, {
        "provider_id": "p-1", "review_id": "rv-1", "rating": 5, "posted_at": "2026-11-03T09:00:00Z"}),
    "workflow.created": ("workflows.events", b"w-1", WorkflowCreated, {
        "workflow_id": "w-1", "owner_id": "u-1", "name": "Onboarding", "is_template": False,
        "created_at": "2026-11-01T09:00:00Z"}),
    "workflow.version_saved": ("workflows.events", b"w-1", WorkflowVersionSaved, {
        "workflow_id": "w-1", "version_number": 4, "nodes": [{"id": "n1"}, {"id": "n2"}, "x", 3],
        "edges": [{"from": "n1", "to": "n2"}], "saved_at": "2026-11-01T10:00:00Z"}),
    "workflow.deleted": ("workflows.events", b"w-1", WorkflowDeleted, {
        "workflow_id": "w-1", "deleted_at": "2026-11-01T11:00:00Z"}),
}  # fmt: skip

DROP = object()


def _set(target: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        target = target[part]
    if value is DROP:
        del target[last]
    else:
        target[last] = value


def envelope(event_type: str = "message.created", changes: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """The example envelope of ``event_type``; ``changes`` edits payload paths, ``top`` the envelope."""
    body = copy.deepcopy(EXAMPLES[event_type][3]) if event_type in EXAMPLES else {}
    for path, value in (changes or {}).items():
        _set(body, path, value)
    env = {"event_id": "e-1", "type": event_type, "schema_version": 1,
           "occurred_at": "2026-11-22T10:15:00.123Z", "payload": body}  # fmt: skip
    for name, value in top.items():
        _set(env, name, value)
    return env


def rec(event_type: str = "message.created", changes: dict[str, Any] | None = None, **top: Any) -> bytes:
    return orjson.dumps(envelope(event_type, changes, **top))


def decode_example(event_type: str, changes: dict[str, Any] | None = None, **top: Any) -> Event:
    topic, key, _, _ = EXAMPLES[event_type]
    event = decode(topic, key, rec(event_type, changes, **top))
    assert isinstance(event, Event)
    return event


# -- every contract example decodes --------------------------------------------------------------


@pytest.mark.parametrize("event_type", list(EXAMPLES))
def test_contract_example_decodes_to_its_model(event_type: str) -> None:
    topic, key, model, payload = EXAMPLES[event_type]
    event = decode(topic, key, rec(event_type))
    assert isinstance(event, Event)
    assert (event.event_id, event.type) == ("e-1", event_type)
    assert event.occurred_at == datetime(2026, 11, 22, 10, 15, 0, 123000, tzinfo=UTC)
    assert type(event.payload) is model
    assert event.payload.model_dump(mode="json", exclude_unset=True) == payload


@pytest.mark.parametrize(
    ("event_type", "path", "expected"),
    [
        pytest.param("thread.started", "client.name", "Ann Lee", id="client-name"),
        pytest.param("thread.started", "provider.business_name", "DJ Bob", id="business-name"),
        pytest.param("thread.started", "provider.avatar_url", None, id="null-avatar"),
        pytest.param("thread.started", "created_at", datetime(2026, 11, 22, 10, tzinfo=UTC), id="created-at"),
        pytest.param("message.created", "sender_type", "client", id="sender-type"),
        pytest.param("message.created", "attachment", None, id="no-attachment"),
        pytest.param("thread.pinned", "pinned", True, id="pinned"),
        pytest.param("payment.received", "amount_cents", 250000, id="amount"),
        pytest.param("request.created", "business_unit_id", 3, id="business-unit"),
        pytest.param("request.created", "parent_id", None, id="no-parent"),
        pytest.param("request.updated", "changes.status", "solved", id="changes-status"),
        pytest.param("request.updated", "changes.title", None, id="changes-absent"),
        pytest.param("request.updated", "changes.model_fields_set", {"status", "priority"}, id="changes-sent"),
        pytest.param("request.assigned", "assignee_ids", ["u-3", "u-4"], id="assignees"),
        pytest.param("provider.profile_updated", "hourly_rate_cents", 150000, id="rate"),
        pytest.param("provider.profile_updated", "custom_subtitle", None, id="subtitle"),
        pytest.param("review.posted", "rating", 5, id="rating"),
        pytest.param("workflow.version_saved", "nodes", [{"id": "n1"}, {"id": "n2"}, "x", 3], id="nodes"),
        pytest.param("workflow.created", "is_template", False, id="is-template"),
    ],
)
def test_example_values(event_type: str, path: str, expected: Any) -> None:
    assert operator.attrgetter(path)(decode_example(event_type).payload) == expected


# -- valid edge cases ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "changes"),
    [
        pytest.param("message.created", {"sender_type": "system", "sender_id": None, "message_type": "system",
                     "system_key": "event_reminder", "system_args": {"days_before": 3, "date": "2026-12-05"}},
                     id="system-message-null-sender"),
        pytest.param("message.created", {"sender_type": "system", "message_type": "system"}, id="system-with-sender"),
        pytest.param("message.created", {"content": "", "attachment": {"kind": "image", "url": "https://x/i.png"}},
                     id="attachment"),
        pytest.param("message.created", {"visible_to": "provider", "sender_type": "provider"}, id="provider-only"),
        pytest.param("thread.started", {"client.avatar_url": None, "provider.business_name": None}, id="nulls"),
        pytest.param("thread.pinned", {"pinned": False}, id="unpinned"),
        pytest.param("request.created", {"parent_id": "r-0", "priority": "urgent", "status": "pending_subtask"},
                     id="subtask"),
        pytest.param("request.updated", {"changes": {}}, id="empty-changes"),
        pytest.param("request.updated", {"changes": {"title": "New", "business_unit_id": 4}}, id="partial-changes"),
        pytest.param("request.assigned", {"assignee_ids": []}, id="no-assignees"),
        pytest.param("provider.profile_updated", {"business_name": None, "avatar_url": None, "location": None,
                     "hourly_rate_cents": None, "price_visible": False, "status": "suspended"}, id="profile-nulls"),
        pytest.param("review.posted", {"rating": 1}, id="rating-1"),
        pytest.param("workflow.version_saved", {"nodes": [], "edges": []}, id="empty-graph"),
        pytest.param("message.created", {"extra": 1, "attachment": {"kind": "file", "url": "u", "size": 3}},
                     id="extra-payload-fields"),
        pytest.param("thread.started", {"client.email": "a@b", "tenant": "x"}, id="extra-nested-fields"),
    ],
)  # fmt: skip
def test_valid_variants_decode(event_type: str, changes: dict[str, Any]) -> None:
    event = decode_example(event_type, changes)
    assert type(event.payload) is EXAMPLES[event_type][2]


def test_extra_fields_are_ignored_not_kept() -> None:
    event = decode_example("thread.started", {"tenant": "x", "client.email": "a@b"}, trace_id="abc")
    payload = event.payload
    assert isinstance(payload, ThreadStarted)
    assert not hasattr(payload, "tenant") and not hasattr(payload.client, "email")


def test_changes_model_fields_set_names_the_keys_sent() -> None:
    payload = decode_example("request.updated", {"changes": {"title": "New"}}).payload
    assert isinstance(payload, RequestUpdated)
    assert payload.changes.model_fields_set == {"title"}
    assert (payload.changes.title, payload.changes.status) == ("New", None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2026-11-22T10:00:00Z", datetime(2026, 11, 22, 10, tzinfo=UTC), id="z"),
        pytest.param("2026-11-22t10:00:00z", datetime(2026, 11, 22, 10, tzinfo=UTC), id="lower-case"),
        pytest.param("2026-11-22T12:00:00+02:00", datetime(2026, 11, 22, 10, tzinfo=UTC), id="offset"),
        pytest.param("2026-11-22T10:00:00.123456789Z", datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC),
                     id="nanoseconds"),
        pytest.param("2026-11-22T10:00:00.5-00:00", datetime(2026, 11, 22, 10, 0, 0, 500000, tzinfo=UTC),
                     id="minus-zero"),
    ],
)  # fmt: skip
def test_times_are_aware_and_in_utc(text: str, expected: datetime) -> None:
    event = decode_example("message.created", {"created_at": text}, occurred_at=text)
    assert isinstance(event.payload, MessageCreated)
    for moment in (event.payload.created_at, event.occurred_at):
        assert moment == expected and moment.utcoffset() == timedelta(0)


def test_decoded_values_are_frozen() -> None:
    event = decode_example("thread.pinned")
    with pytest.raises(ValidationError):
        event.payload.pinned = False  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        event.type = "x"  # type: ignore[misc]


# -- tolerant reader -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(rec("thread.archived"), id="unknown-type"),
        pytest.param(rec("thread.archived", payload={"anything": [1]}), id="any-payload"),
        pytest.param(rec("thread.archived", schema_version=7), id="unknown-version-of-unknown-type"),
    ],
)
def test_unknown_type_is_returned_not_raised(value: bytes) -> None:
    assert decode("threads.events", b"whatever", value) == UnknownEvent("e-1", "thread.archived")


def test_unknown_type_still_needs_an_envelope() -> None:
    with pytest.raises(InvalidEvent, match="payload"):
        decode("threads.events", b"t-1", rec("thread.archived", payload=DROP))


# -- invalid records -----------------------------------------------------------------------------


def bad(
    case_id: str, value: bytes | None, fragment: str, *, topic: str = "threads.events", key: bytes | None = b"t-1"
) -> Any:
    return pytest.param(topic, key, value, fragment, id=case_id)


REQ: dict[str, Any] = {"topic": "requests.events", "key": b"r-1"}
PROV: dict[str, Any] = {"topic": "providers.events", "key": b"p-1"}
WF: dict[str, Any] = {"topic": "workflows.events", "key": b"w-1"}
PAY: dict[str, Any] = {"topic": "payments.events", "key": b"t-1"}

INVALID = [
    # not an envelope
    bad("not-json", b"{not json", "not JSON"),
    bad("empty-value", b"", "not JSON"),
    bad("not-utf8", b'{"event_id": "\xff"}', "not JSON"),
    bad("tombstone", None, "tombstone"),
    bad("json-array", b"[1, 2]", "must be a JSON object, got array"),
    bad("json-string", b'"hello"', "must be a JSON object, got string"),
    bad("missing-event-id", rec(event_id=DROP), "missing field 'event_id'"),
    bad("event-id-int", rec(event_id=5), "'event_id' must be a non-empty string"),
    bad("event-id-empty", rec(event_id=""), "'event_id' must be a non-empty string, got an empty string"),
    bad("missing-type", rec(type=DROP), "missing field 'type'"),
    bad("type-null", rec(type=None), "'type' must be a non-empty string, got null"),
    bad("missing-schema-version", rec(schema_version=DROP), "missing field 'schema_version'"),
    bad("schema-version-2", rec(schema_version=2), "unsupported schema_version 2"),
    bad("schema-version-0", rec(schema_version=0), "unsupported schema_version 0"),
    bad("schema-version-string", rec(schema_version="1"), "'schema_version' must be an integer, got string"),
    bad("schema-version-true", rec(schema_version=True), "'schema_version' must be an integer, got boolean"),
    bad("schema-version-float", rec(schema_version=1.0), "'schema_version' must be an integer, got number"),
    bad("missing-occurred-at", rec(occurred_at=DROP), "missing field 'occurred_at'"),
    bad("occurred-at-naive", rec(occurred_at="2026-11-22T10:15:00"), "'occurred_at' must be an RFC 3339"),
    bad("occurred-at-date-only", rec(occurred_at="2026-11-22"), "'occurred_at' must be an RFC 3339"),
    bad("occurred-at-number", rec(occurred_at=1764000000), "'occurred_at' must be an RFC 3339"),
    # bounds (CONTRACT §3): times within years 1..9999 in UTC, ids of 1..200 characters without controls
    bad("occurred-at-before-year-1", rec(occurred_at="0001-01-01T00:00:00+01:00"),
        "'occurred_at' must be within years 0001..9999 once converted to UTC"),
    bad("occurred-at-after-9999", rec(occurred_at="9999-12-31T23:59:59-01:00"), "within years 0001..9999"),
    bad("unknown-type-occurred-at-overflow", rec("thread.archived", occurred_at="0001-01-01T00:00:00+01:00"),
        "within years 0001..9999"),
    bad("created-at-after-9999", rec(changes={"created_at": "9999-12-31T23:59:59-01:00"}),
        "created_at: Input should be a time within years 0001..9999 once converted to UTC"),
    bad("read-up-to-before-year-1", rec("message.read", {"read_up_to": "0001-01-01T00:59:59+01:00"}), "read_up_to"),
    bad("event-id-3000", rec(event_id="e" * 3000), "'event_id' must have at most 200 characters (has 3000)"),
    bad("event-id-newline", rec(event_id="e-1\nfake"), "'event_id' must not contain control characters: 'e-1\\nfake'"),
    bad("event-id-nul", rec(event_id="e\x00"), "'event_id' must not contain control characters"),
    bad("event-id-del", rec(event_id="e\x7f"), "control characters"),
    bad("event-id-c1", rec(event_id="e\x85"), "control characters"),
    bad("unknown-type-event-id-3000", rec("thread.archived", event_id="e" * 3000), "at most 200 characters"),
    bad("message-id-3000", rec(changes={"message_id": "m" * 3000}),
        "payload: message_id: An id must have at most 200 characters (has 3000)"),
    bad("thread-id-3000-key-too", rec(changes={"thread_id": "t" * 3000}), "thread_id: An id must have at most 200",
        key=b"t" * 3000),
    bad("thread-id-201", rec(changes={"thread_id": "t" * 201}), "thread_id", key=b"t" * 201),
    bad("thread-id-empty", rec(changes={"thread_id": ""}), "thread_id: An id must not be empty", key=b""),
    bad("thread-id-cr", rec(changes={"thread_id": "t\r1"}), "thread_id: An id must not contain control characters",
        key=b"t\r1"),
    bad("sender-id-nul", rec(changes={"sender_id": "u\x00"}), "sender_id: An id must not contain control"),
    bad("client-id-newline", rec("thread.started", {"client.id": "u\n2"}), "client.id: An id must not contain"),
    bad("provider-id-long", rec("thread.started", {"provider.id": "p" * 201}), "provider.id"),
    bad("reader-id-tab", rec("message.read", {"reader_id": "u\t1"}), "reader_id"),
    bad("pin-user-empty", rec("thread.pinned", {"user_id": ""}), "user_id"),
    bad("payment-id-long", rec("payment.received", {"payment_id": "p" * 201}), "payment_id", **PAY),
    bad("requester-id-nul", rec("request.created", {"requester_id": "\x00"}), "requester_id", **REQ),
    bad("parent-id-long", rec("request.created", {"parent_id": "r" * 201}), "parent_id", **REQ),
    bad("assignee-id-newline", rec("request.assigned", {"assignee_ids": ["u-3", "u\n4"]}), "assignee_ids.1", **REQ),
    bad("technician-id-empty", rec("request.taken", {"technician_id": ""}), "technician_id", **REQ),
    bad("request-message-id-long", rec("request.message_created", {"message_id": "m" * 201}), "message_id", **REQ),
    bad("request-reader-id-c1", rec("request.message_read", {"reader_id": "u\x9b"}), "reader_id", **REQ),
    bad("booking-id-long", rec("booking.confirmed", {"booking_id": "b" * 201}), "booking_id", **PROV),
    bad("review-id-nul", rec("review.posted", {"review_id": "\x00"}), "review_id", **PROV),
    bad("owner-id-long", rec("workflow.created", {"owner_id": "u" * 201}), "owner_id", **WF),
    bad("workflow-id-newline", rec("workflow.deleted", {"workflow_id": "w\n"}), "workflow_id", topic="workflows.events",
        key=b"w\n"),
    bad("unknown-changes-key-nul", rec("request.updated", {"changes": {"x" * 100 + "\x00": 1}}),
        "changes.'xxxxxxxx", **REQ),
    bad("missing-payload", rec(payload=DROP), "missing field 'payload'"),
    bad("payload-array", rec(payload=[]), "'payload' must be an object, got array"),
    bad("payload-null", rec(payload=None), "'payload' must be an object, got null"),
    # topic and key
    bad("wrong-topic", rec("payment.received"), "type 'payment.received' is not carried by topic 'threads.events'"),
    bad("thread-type-on-payments", rec("message.created"), "not carried by topic 'payments.events'", **PAY),
    bad("request-on-threads", rec("request.created"), "not carried by topic 'threads.events'"),
    bad("key-mismatch", rec(), "record key 't-2' differs from payload thread_id 't-1'", key=b"t-2"),
    bad("key-none", rec(), "record key is missing", key=None),
    bad("key-empty", rec(), "record key '' differs", key=b""),
    bad("key-not-utf8", rec(), "record key is not UTF-8", key=b"\xff"),
    bad("key-is-requester", rec("request.created"), "differs from payload request_id 'r-1'", topic="requests.events",
        key=b"u-7"),
    # payload: required fields and nulls
    bad("missing-thread-id", rec(changes={"thread_id": DROP}), "payload: thread_id: Field required"),
    bad("missing-nested", rec("thread.started", {"client.name": DROP}), "client.name: Field required"),
    bad("missing-nullable", rec("thread.started", {"client.avatar_url": DROP}), "client.avatar_url: Field required"),
    bad("null-content", rec(changes={"content": None}), "content"),
    bad("null-client-name", rec("thread.started", {"client.name": None}), "client.name"),
    bad("null-client", rec("thread.started", {"client": None}), "client"),
    bad("null-title", rec("request.created", {"title": None}), "title", **REQ),
    bad("null-category", rec("provider.profile_updated", {"category": None}), "category", **PROV),
    bad("null-created-at", rec(changes={"created_at": None}), "created_at"),
    bad("client-sender-null", rec(changes={"sender_id": None}),
        "sender_id: must be a string when sender_type is 'client'"),
    bad("provider-sender-null", rec(changes={"sender_id": None, "sender_type": "provider"}), "sender_id"),
    # payload: times
    bad("naive-time", rec(changes={"created_at": "2026-11-22T10:05:00"}), "created_at: Input should be an RFC 3339"),
    bad("date-only", rec(changes={"created_at": "2026-11-22"}), "created_at"),
    bad("space-separator", rec(changes={"created_at": "2026-11-22 10:05:00Z"}), "created_at"),
    bad("unix-time", rec(changes={"created_at": 1764000000}), "created_at"),
    bad("impossible-date", rec(changes={"created_at": "2026-02-30T10:00:00Z"}), "created_at"),
    bad("leap-second", rec("message.read", {"read_at": "2026-12-31T23:59:60Z"}), "read_at"),
    bad("offset-minutes-75", rec(changes={"created_at": "2026-11-22T10:05:00+05:75"}), "created_at"),
    # payload: closed value sets
    bad("sender-type-bot", rec(changes={"sender_type": "bot"}), "sender_type"),
    bad("message-type-note", rec(changes={"message_type": "note"}), "message_type"),
    bad("visible-to-all", rec(changes={"visible_to": "everyone"}), "visible_to"),
    bad("attachment-video", rec(changes={"attachment": {"kind": "video", "url": "u"}}), "attachment.kind"),
    bad("attachment-no-url", rec(changes={"attachment": {"kind": "file"}}), "attachment.url"),
    bad("priority-critical", rec("request.created", {"priority": "critical"}), "priority", **REQ),
    bad("status-archived", rec("request.created", {"status": "archived"}), "status", **REQ),
    bad("sender-role-admin", rec("request.message_created", {"sender_role": "admin"}), "sender_role", **REQ),
    bad("reader-role-admin", rec("request.message_read", {"reader_role": "admin"}), "reader_role", **REQ),
    bad("provider-status-banned", rec("provider.profile_updated", {"status": "banned"}), "status", **PROV),
    # payload: no coercion
    bad("string-for-int", rec("request.created", {"business_unit_id": "3"}), "business_unit_id", **REQ),
    bad("bool-for-int", rec("request.created", {"business_unit_id": True}), "business_unit_id", **REQ),
    bad("string-amount", rec("payment.received", {"amount_cents": "5"}), "amount_cents", **PAY),
    bad("float-amount", rec("payment.received", {"amount_cents": 2500.0}), "amount_cents", **PAY),
    bad("string-version", rec("workflow.version_saved", {"version_number": "4"}), "version_number", **WF),
    bad("string-rating", rec("review.posted", {"rating": "5"}), "rating", **PROV),
    bad("string-rate", rec("provider.profile_updated", {"hourly_rate_cents": "150000"}), "hourly_rate_cents", **PROV),
    bad("int-for-bool", rec("thread.pinned", {"pinned": 1}), "pinned"),
    bad("string-for-bool", rec("provider.profile_updated", {"price_visible": "true"}), "price_visible", **PROV),
    bad("zero-for-bool", rec("workflow.created", {"is_template": 0}), "is_template", **WF),
    bad("int-for-str", rec(changes={"content": 5}), "content"),
    bad("int-id", rec(changes={"thread_id": 1}), "thread_id"),
    bad("system-args-list", rec(changes={"system_args": [3]}), "system_args"),
    bad("system-args-string", rec(changes={"system_args": "x"}), "system_args"),
    bad("assignees-string", rec("request.assigned", {"assignee_ids": "u-3"}), "assignee_ids", **REQ),
    bad("assignees-int", rec("request.assigned", {"assignee_ids": ["u-3", 4]}), "assignee_ids.1", **REQ),
    # payload: request changes
    bad("changes-unknown-key", rec("request.updated", {"changes.assignee_ids": ["u-3"]}), "changes.assignee_ids",
        **REQ),
    bad("changes-null-status", rec("request.updated", {"changes.status": None}), "changes.status", **REQ),
    bad("changes-bad-status", rec("request.updated", {"changes.status": "done"}), "changes.status", **REQ),
    bad("changes-string-unit", rec("request.updated", {"changes": {"business_unit_id": "3"}}),
        "changes.business_unit_id", **REQ),
    bad("changes-not-object", rec("request.updated", {"changes": ["status"]}), "changes", **REQ),
    bad("changes-missing", rec("request.updated", {"changes": DROP}), "changes: Field required", **REQ),
    # payload: ranges and arrays
    bad("rating-6", rec("review.posted", {"rating": 6}), "rating", **PROV),
    bad("rating-0", rec("review.posted", {"rating": 0}), "rating", **PROV),
    bad("nodes-object", rec("workflow.version_saved", {"nodes": {"n1": {}}}), "nodes", **WF),
    bad("edges-null", rec("workflow.version_saved", {"edges": None}), "edges", **WF),
]  # fmt: skip


@pytest.mark.parametrize(("topic", "key", "value", "fragment"), INVALID)
def test_invalid_record_raises_with_reason(topic: str, key: bytes | None, value: bytes | None, fragment: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode(topic, key, value)
    assert fragment in caught.value.reason
    assert str(caught.value) == caught.value.reason
    assert clean_reason(caught.value.reason) == caught.value.reason  # no control character, bounded


@pytest.mark.parametrize(
    ("changes", "top"),
    [
        pytest.param({"thread_id": "t" * 200}, {}, id="id-of-200"),
        pytest.param({"thread_id": "t-é ✓ 日本"}, {}, id="non-ascii-id"),
        pytest.param({"created_at": "0001-01-01T00:00:00Z"}, {"occurred_at": "0001-01-01T00:30:00+00:30"}, id="year-1"),
        pytest.param({"created_at": "9999-12-31T23:59:59.999999Z"}, {"occurred_at": "9999-12-31T22:59:59-01:00"},
                     id="year-9999"),
        pytest.param({}, {"event_id": "e" * 200}, id="event-id-of-200"),
    ],
)  # fmt: skip
def test_values_at_the_bounds_decode(changes: dict[str, Any], top: dict[str, Any]) -> None:
    key = changes.get("thread_id", "t-1").encode()
    event = decode("threads.events", key, rec(changes=changes, **top))
    assert isinstance(event, Event)


def test_a_decoder_bug_costs_one_record_not_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(payload: dict[str, Any]) -> dict[str, Any]:
        raise OverflowError("date value out of range")

    monkeypatch.setitem(UPCASTERS, ("thread.pinned", 0), broken)
    with pytest.raises(InvalidEvent, match=r"decoder error: OverflowError\('date value out of range'\)"):
        decode("threads.events", b"t-1", rec("thread.pinned", schema_version=0))


def test_reasons_are_cleaned_and_bounded() -> None:
    assert clean_reason("a\x00b\nc\x9f") == "a\\x00b\\x0ac\\x9f"
    assert len(clean_reason("x" * 5000)) == REASON_MAX
    assert InvalidEvent("bad\r\n").reason == "bad\\x0d\\x0a"


def test_payload_reason_is_prefixed_and_short() -> None:
    many = {name: DROP for name in EXAMPLES["message.created"][3]}
    with pytest.raises(InvalidEvent) as caught:
        decode("threads.events", b"t-1", rec(changes=many))
    reason = caught.value.reason
    assert reason.startswith("payload: ") and "(and 8 more)" in reason
    assert (caught.value.event_id, caught.value.type) == ("e-1", "message.created")


def test_long_key_is_clipped_in_reason() -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode("threads.events", b"k" * 10_000, rec())
    assert len(caught.value.reason) < 300


def test_unknown_topic_is_a_wiring_error() -> None:
    with pytest.raises(ValueError, match="unknown topic 'prod.threads.events'"):
        decode("prod.threads.events", b"t-1", rec())


def test_upcasters_lift_older_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    def v0_to_v1(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "pinned": payload.pop("is_pinned")}

    monkeypatch.setitem(UPCASTERS, ("thread.pinned", 0), v0_to_v1)
    value = rec("thread.pinned", {"pinned": DROP, "is_pinned": False}, schema_version=0)
    payload = decode("threads.events", b"t-1", value).payload  # type: ignore[union-attr]
    assert isinstance(payload, ThreadPinned) and payload.pinned is False


# -- registry and exports ------------------------------------------------------------------------


def test_topics_partition_the_payload_types() -> None:
    carried = [t for _, types in TOPICS.values() for t in types]
    assert sorted(carried) == sorted(PAYLOAD_TYPES) == sorted(EXAMPLES)
    assert len(carried) == len(set(carried))


@pytest.mark.parametrize("topic", list(TOPICS))
def test_every_payload_of_a_topic_has_its_key_field(topic: str) -> None:
    key_field, types = TOPICS[topic]
    for event_type in types:
        assert PAYLOAD_TYPES[event_type].model_fields[key_field].annotation in (str, "str")


def test_public_api_is_sorted_and_complete() -> None:
    assert readside.schemas.__all__ == sorted(readside.schemas.__all__)
    assert all(hasattr(readside.schemas, name) for name in readside.schemas.__all__)
    assert {model.__name__ for model in PAYLOAD_TYPES.values()} <= set(readside.schemas.__all__)


# -- JSON Schema ---------------------------------------------------------------------------------


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_json_schema_covers_every_type() -> None:
    doc = envelope_json_schema()
    assert isinstance(doc, dict)
    orjson.dumps(doc)  # JSON-serializable as is
    by_type = {v["properties"]["type"]["const"]: v for v in doc["oneOf"]}
    assert set(by_type) == set(PAYLOAD_TYPES)
    for event_type, variant in by_type.items():
        assert variant["properties"]["payload"] == {"$ref": f"#/$defs/{PAYLOAD_TYPES[event_type].__name__}"}
        assert set(variant["required"]) == {"event_id", "type", "schema_version", "occurred_at", "payload"}
    for ref in _refs(doc):
        assert ref.removeprefix("#/$defs/") in doc["$defs"]


def test_json_schema_states_the_rules() -> None:
    defs = envelope_json_schema()["$defs"]
    changes = defs["RequestChanges"]
    assert changes["additionalProperties"] is False and "required" not in changes
    assert changes["properties"]["status"]["type"] == "string"  # present means not null
    assert defs["ReviewPosted"]["properties"]["rating"] == {"maximum": 5, "minimum": 1, "title": "Rating",
                                                            "type": "integer"}  # fmt: skip
    assert defs["MessageCreated"]["properties"]["created_at"]["format"] == "date-time"
    assert set(defs["ThreadStarted"]["required"]) == set(EXAMPLES["thread.started"][3])


# -- producing -----------------------------------------------------------------------------------


def test_json_schema_carries_the_bounds_of_ids() -> None:
    doc = envelope_json_schema()
    bounded = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": ID_PATTERN}
    for variant in doc["oneOf"]:
        assert variant["properties"]["event_id"] == bounded
    defs = doc["$defs"]
    ids = {
        "ThreadStarted": ["thread_id"], "Participant": ["id"], "ProviderParticipant": ["id"],
        "MessageCreated": ["thread_id", "message_id"], "MessageRead": ["thread_id", "reader_id"],
        "MessageDeleted": ["thread_id", "message_id"], "ThreadStateChanged": ["thread_id"],
        "ThreadPinned": ["thread_id", "user_id"], "PaymentReceived": ["thread_id", "payment_id"],
        "RequestCreated": ["request_id", "requester_id"], "RequestUpdated": ["request_id"],
        "RequestAssigned": ["request_id"], "RequestTaken": ["request_id", "technician_id"],
        "RequestMessageCreated": ["request_id", "message_id", "sender_id"],
        "RequestMessageRead": ["request_id", "reader_id"], "ProviderProfileUpdated": ["provider_id"],
        "BookingConfirmed": ["provider_id", "booking_id"], "ReviewPosted": ["provider_id", "review_id"],
        "WorkflowCreated": ["workflow_id", "owner_id"], "WorkflowVersionSaved": ["workflow_id"],
        "WorkflowDeleted": ["workflow_id"],
    }  # fmt: skip
    for model, fields in ids.items():
        for name in fields:
            prop = {k: v for k, v in defs[model]["properties"][name].items() if k != "title"}
            assert prop == bounded, (model, name, prop)
    nullable = [defs["MessageCreated"]["properties"]["sender_id"], defs["RequestCreated"]["properties"]["parent_id"]]
    assert all(bounded in p["anyOf"] and {"type": "null"} in p["anyOf"] for p in nullable)
    assert defs["RequestAssigned"]["properties"]["assignee_ids"]["items"] == bounded
    # the pattern means what the decoder checks, in Python's regex dialect as in ECMA-262's
    pattern = re.compile(ID_PATTERN)
    assert pattern.match("t-é ✓") and not any(pattern.match(f"a{c}b") for c in "\x00\n\r\x1f\x7f\x85\x9f")


def test_make_event_builds_a_version_1_envelope() -> None:
    payload = EXAMPLES["thread.pinned"][3]
    env = make_event("thread.pinned", payload)
    assert set(env) == {"event_id", "type", "schema_version", "occurred_at", "payload"}
    assert uuid.UUID(env["event_id"]).version == 4
    assert (env["type"], env["schema_version"], env["payload"]) == ("thread.pinned", 1, payload)
    assert env["payload"] is not payload
    occurred = datetime.fromisoformat(env["occurred_at"])
    assert env["occurred_at"].endswith("Z") and abs(datetime.now(UTC) - occurred) < timedelta(minutes=1)


def test_make_event_keeps_given_id_and_time() -> None:
    at = datetime(2026, 11, 22, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    env = make_event("thread.pinned", EXAMPLES["thread.pinned"][3], event_id="e-42", occurred_at=at)
    assert (env["event_id"], env["occurred_at"]) == ("e-42", "2026-11-22T10:00:00.123Z")


@pytest.mark.parametrize("event_type", list(EXAMPLES))
def test_made_events_round_trip_through_decode(event_type: str) -> None:
    topic, key, model, payload = EXAMPLES[event_type]
    env = make_event(event_type, payload)
    routed_topic, routed_key = route(event_type, payload)
    assert (routed_topic, routed_key) == (topic, key)
    event = decode(routed_topic, routed_key, encode(env))
    assert isinstance(event, Event) and event.event_id == env["event_id"] and type(event.payload) is model


def test_payload_datetimes_are_encoded_as_rfc3339() -> None:
    at = datetime(2026, 11, 22, 10, 5, tzinfo=UTC)
    value = encode(make_event("message.deleted", {"thread_id": "t-1", "message_id": "m-9", "deleted_at": at}))
    assert b'"deleted_at":"2026-11-22T10:05:00Z"' in value
    assert decode("threads.events", b"t-1", value).payload.deleted_at == at  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("event_type", "payload", "kwargs", "fragment"),
    [
        pytest.param("review.posted", {**EXAMPLES["review.posted"][3], "rating": 6}, {}, "rating", id="rating-6"),
        pytest.param("message.created", {**EXAMPLES["message.created"][3], "sender_id": None}, {}, "sender_id",
                     id="client-sender-null"),
        pytest.param("thread.pinned", {"thread_id": "t-1"}, {}, "user_id", id="missing-fields"),
        pytest.param("message.deleted", {"thread_id": "t-1", "message_id": "m", "deleted_at": datetime(2026, 1, 1)},
                     {}, "deleted_at", id="naive-datetime"),
        pytest.param("thread.archived", {}, {}, "unknown event type", id="unknown-type"),
        pytest.param("thread.pinned", EXAMPLES["thread.pinned"][3], {"occurred_at": datetime(2026, 1, 1)},
                     "timezone-aware", id="naive-occurred-at"),
        pytest.param("thread.pinned", EXAMPLES["thread.pinned"][3], {"event_id": ""}, "event_id", id="empty-id"),
        pytest.param("thread.pinned", EXAMPLES["thread.pinned"][3], {"event_id": "e\n1"}, "control", id="newline-id"),
        pytest.param("thread.pinned", {**EXAMPLES["thread.pinned"][3], "user_id": "u" * 201}, {}, "user_id",
                     id="long-user-id"),
    ],
)  # fmt: skip
def test_make_event_rejects(event_type: str, payload: dict[str, Any], kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        make_event(event_type, payload, **kwargs)


@pytest.mark.parametrize(
    ("event_type", "prefix", "expected"),
    [
        pytest.param("message.created", "prod.", ("prod.threads.events", b"t-1"), id="threads-prefixed"),
        pytest.param("payment.received", "", ("payments.events", b"t-1"), id="payments"),
        pytest.param("request.taken", "x-", ("x-requests.events", b"r-1"), id="requests"),
        pytest.param("review.posted", "prod.", ("prod.providers.events", b"p-1"), id="providers"),
        pytest.param("workflow.deleted", "prod.", ("prod.workflows.events", b"w-1"), id="workflows"),
    ],
)
def test_route_gives_prefixed_topic_and_aggregate_key(
    event_type: str, prefix: str, expected: tuple[str, bytes]
) -> None:
    assert route(event_type, EXAMPLES[event_type][3], prefix) == expected


def test_route_utf8_key_and_errors() -> None:
    assert route("thread.pinned", {"thread_id": "t-é"})[1] == "t-é".encode()
    with pytest.raises(ValueError, match="unknown event type"):
        route("thread.archived", {"thread_id": "t-1"})
    with pytest.raises(ValueError, match="thread_id"):
        route("thread.pinned", {"user_id": "u-1"})


from aiokafka.structs import RecordMetadata, TopicPartition  # noqa: E402


class _FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> RecordMetadata:
        self.sent.append((topic, value, key))
        return RecordMetadata(topic, 0, TopicPartition(topic, 0), len(self.sent) - 1, 1_700_000_000_000, 0, 0)


def test_publisher_makes_routes_and_sends() -> None:
    producer = _FakeProducer()
    publisher = Publisher(producer, prefix="prod.")  # type: ignore[arg-type]
    payload = EXAMPLES["request.taken"][3]
    result = asyncio.run(publisher.publish("request.taken", payload, event_id="e-7"))
    assert (result.event_id, result.token) == ("e-7", "prod.requests.events:0:0")
    [(topic, value, key)] = producer.sent
    assert (topic, key) == ("prod.requests.events", b"r-1")
    event = decode("requests.events", key, value)
    assert isinstance(event, Event) and event.event_id == "e-7" and isinstance(event.payload, RequestTaken)
    with pytest.raises(ValueError):
        asyncio.run(publisher.publish("request.taken", {**payload, "technician_id": None}))
    assert len(producer.sent) == 1


# -- properties ----------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(database=None)
@given(value=st.binary(max_size=200))
def test_any_bytes_decode_or_raise_invalid_event(value: bytes) -> None:
    try:
        decode("threads.events", b"t-1", value)
    except InvalidEvent as exc:
        assert exc.reason


@settings(database=None)
@given(data=st.data(), junk=_json)
def test_any_field_value_decodes_or_raises_invalid_event(data: st.DataObject, junk: Any) -> None:
    event_type = data.draw(st.sampled_from(sorted(EXAMPLES)))
    topic, key, _, payload = EXAMPLES[event_type]
    field = data.draw(st.sampled_from(sorted(payload)))
    try:
        decode(topic, key, rec(event_type, {field: junk}))
    except InvalidEvent as exc:
        assert exc.reason


_ids = st.text(st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=200)


@settings(database=None)
@given(thread_id=_ids, content=st.text(), sender=_ids)
def test_made_message_round_trips(thread_id: str, content: str, sender: str) -> None:
    payload = {**EXAMPLES["message.created"][3], "thread_id": thread_id, "content": content, "sender_id": sender}
    topic, key = route("message.created", payload)
    event = decode(topic, key, encode(make_event("message.created", payload)))
    assert isinstance(event, Event) and isinstance(event.payload, MessageCreated)
    assert (event.payload.thread_id, event.payload.content, event.payload.sender_id) == (thread_id, content, sender)
