"""The synthetic generator: deterministic, contract-shaped, and realistic where the read models care."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime

import orjson
import pytest

from readside.load import (
    TOPICS,
    Record,
    mixed_stream,
    provider_stream,
    request_stream,
    thread_stream,
    workflow_stream,
)

TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
AGGREGATE = {"threads.events": "thread_id", "payments.events": "thread_id",
             "requests.events": "request_id", "providers.events": "provider_id",
             "workflows.events": "workflow_id"}
# the payload's own time field, per type: CONTRACT §3 "time order"
OWN_TIME = {"thread.started": "created_at", "message.created": "created_at", "message.read": "read_at",
            "message.deleted": "deleted_at", "thread.state_changed": "changed_at",
            "thread.pinned": "changed_at", "payment.received": "received_at",
            "request.created": "created_at", "request.updated": "updated_at",
            "request.assigned": "assigned_at", "request.taken": "taken_at",
            "request.message_created": "created_at", "request.message_read": "read_at",
            "provider.profile_updated": "updated_at", "booking.confirmed": "confirmed_at",
            "review.posted": "posted_at", "workflow.created": "created_at",
            "workflow.version_saved": "saved_at", "workflow.deleted": "deleted_at"}


@pytest.fixture(scope="module")
def threads() -> list[Record]:
    return thread_stream(threads=300, seed=11)


@pytest.fixture(scope="module")
def mixed() -> list[Record]:
    return mixed_stream(3, seed=5)


def by_type(records: list[Record], type_: str) -> list[dict]:
    return [r.value["payload"] for r in records if r.value["type"] == type_]


@pytest.mark.parametrize("make", [
    pytest.param(lambda seed: thread_stream(threads=40, seed=seed), id="threads"),
    pytest.param(lambda seed: request_stream(requests=40, seed=seed), id="requests"),
    pytest.param(lambda seed: provider_stream(providers=40, seed=seed), id="providers"),
    pytest.param(lambda seed: workflow_stream(workflows=20, seed=seed), id="workflows"),
    pytest.param(lambda seed: mixed_stream(1, seed=seed), id="mixed"),
])
def test_a_seed_gives_the_same_stream_event_ids_included(make) -> None:
    assert make(3) == make(3)
    assert make(3) != make(4)


def test_different_seeds_use_disjoint_aggregate_ids() -> None:
    ids = [{r.key for r in thread_stream(threads=20, seed=s)} for s in (1, 2)]
    assert not ids[0] & ids[1]


def test_every_envelope_has_the_contract_shape(mixed: list[Record]) -> None:
    assert {r.topic for r in mixed} == set(TOPICS)
    for record in mixed:
        envelope = record.value
        assert set(envelope) == {"event_id", "type", "schema_version", "occurred_at", "payload"}
        assert UUID4.fullmatch(envelope["event_id"])
        assert envelope["schema_version"] == 1
        assert TIME.fullmatch(envelope["occurred_at"])
        payload = envelope["payload"]
        assert record.key == payload[AGGREGATE[record.topic]]
        assert envelope["occurred_at"] == payload[OWN_TIME[envelope["type"]]]
    assert len({r.value["event_id"] for r in mixed}) == len(mixed)


def test_every_record_decodes_with_the_schemas_package(mixed: list[Record], threads: list[Record]) -> None:
    from readside.schemas import Event, decode

    for record in mixed + threads:
        event = decode(record.topic, record.key.encode(), orjson.dumps(record.value))
        assert isinstance(event, Event), record


@pytest.mark.parametrize("make", [
    pytest.param(lambda: thread_stream(threads=50, seed=1), id="threads"),
    pytest.param(lambda: mixed_stream(1, seed=1), id="mixed"),
])
def test_streams_are_in_time_order(make) -> None:
    times = [r.value["occurred_at"] for r in make()]
    assert times == sorted(times)


def test_start_sets_the_clock() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    records = thread_stream(threads=5, seed=1, start=start)
    assert records[0].value["occurred_at"] >= "2030-01-01T00:00:00.000Z"


def test_messages_of_a_thread_have_unique_ids_and_strictly_increasing_times(threads: list[Record]) -> None:
    created = by_type(threads, "message.created")
    assert len({m["message_id"] for m in created}) == len(created)
    per_thread: dict[str, list[str]] = defaultdict(list)
    for message in created:
        per_thread[message["thread_id"]].append(message["created_at"])
    for times in per_thread.values():
        assert all(a < b for a, b in zip(times, times[1:]))


def test_participants_are_distinct_and_some_inboxes_are_heavy(threads: list[Record]) -> None:
    started = by_type(threads, "thread.started")
    assert len(started) == 300
    assert all(t["client"]["id"] != t["provider"]["id"] for t in started)
    per_user: dict[str, int] = defaultdict(int)
    for t in started:
        per_user[t["client"]["id"]] += 1
        per_user[t["provider"]["id"]] += 1
    assert max(per_user.values()) >= 30


def test_threads_cover_the_cases_the_previews_care_about(threads: list[Record]) -> None:
    started = by_type(threads, "thread.started")
    videos = {t["thread_id"] for t in started if t["service_type"] == "personalized_video"}
    assert 10 <= len(videos) <= 60
    avatars = [p["avatar_url"] for t in started for p in (t["client"], t["provider"])]
    assert any(a and a.startswith("data:image/png;base64,") for a in avatars)
    assert None in avatars
    assert None in [t["provider"]["business_name"] for t in started]

    created = by_type(threads, "message.created")
    user = [m for m in created if m["sender_type"] != "system"]
    assert any(len(m["content"]) > 100 for m in user)
    assert any(m["content"] != " ".join(m["content"].split()) for m in user)
    assert any(m["content"] == "" and m["attachment"] for m in user)
    assert {m["visible_to"] for m in created} == {"both", "client", "provider"}
    system = [m for m in created if m["sender_type"] == "system"]
    assert all(m["sender_id"] is None and m["message_type"] == "system" for m in system)
    assert all(m["sender_id"] is not None and m["message_type"] == "user" for m in user)
    assert {m["system_key"] for m in system} == {"new_booking_request", "payment_received", "event_reminder"}
    for m in system:
        if m["system_key"] == "event_reminder":
            assert isinstance(m["system_args"]["days_before"], int)
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", m["system_args"]["date"])

    paid = {p["thread_id"] for p in by_type(threads, "payment.received")}
    assert len(paid & videos) / len(videos) > 0.5
    assert len(paid - videos) / (len(started) - len(videos)) < 0.5
    for type_ in ("message.deleted", "thread.pinned", "thread.state_changed", "message.read"):
        assert by_type(threads, type_), type_


def test_new_booking_request_opens_most_threads(threads: list[Record]) -> None:
    first: dict[str, dict] = {}
    for message in by_type(threads, "message.created"):
        first.setdefault(message["thread_id"], message)
    share = sum(m["system_key"] == "new_booking_request" for m in first.values()) / len(first)
    assert 0.55 < share < 0.85


def test_reads_deletes_and_payments_refer_to_what_exists(threads: list[Record]) -> None:
    participants = {t["thread_id"]: {t["client"]["id"], t["provider"]["id"]}
                    for t in by_type(threads, "thread.started")}
    position = {}
    message_times: dict[str, set[str]] = defaultdict(set)
    for index, record in enumerate(threads):
        payload = record.value["payload"]
        if record.value["type"] == "message.created":
            position[payload["message_id"]] = (index, payload["created_at"])
            message_times[payload["thread_id"]].add(payload["created_at"])
    for index, record in enumerate(threads):
        payload, type_ = record.value["payload"], record.value["type"]
        if type_ == "message.deleted":
            created_index, created_at = position[payload["message_id"]]
            assert created_index < index and created_at < payload["deleted_at"]
        elif type_ == "message.read":
            assert payload["reader_id"] in participants[payload["thread_id"]]
            assert payload["read_up_to"] in message_times[payload["thread_id"]]
            assert payload["read_up_to"] <= payload["read_at"]
        elif type_ == "thread.pinned":
            assert payload["user_id"] in participants[payload["thread_id"]]
        elif type_ == "payment.received":
            assert record.topic == "payments.events" and record.key == payload["thread_id"]
            assert isinstance(payload["amount_cents"], int)


def test_read_markers_only_move_forward(threads: list[Record]) -> None:
    marks: dict[tuple[str, str], str] = {}
    for read in by_type(threads, "message.read"):
        key = (read["thread_id"], read["reader_id"])
        assert read["read_up_to"] >= marks.get(key, "")
        marks[key] = read["read_up_to"]


def test_requests() -> None:
    records = request_stream(requests=200, technicians=5, seed=2)
    created = by_type(records, "request.created")
    ids = [r["request_id"] for r in created]
    subtasks = [r for r in created if r["parent_id"] is not None]
    assert subtasks and all(ids.index(r["parent_id"]) < ids.index(r["request_id"]) for r in subtasks)
    assert {r["business_unit_id"] for r in created} == {1, 2, 3, 4, 5}
    changes = [u["changes"] for u in by_type(records, "request.updated")]
    assert all(changes) and {k for c in changes for k in c} >= {"status", "priority", "title"}
    techs = {t["technician_id"] for t in by_type(records, "request.taken")}
    techs |= {a for x in by_type(records, "request.assigned") for a in x["assignee_ids"]}
    assert techs <= {f"tech-{i}" for i in range(1, 6)}
    roles = {m["sender_role"] for m in by_type(records, "request.message_created")}
    assert roles == {"requester", "technician"}
    assert by_type(records, "request.message_read")


def test_providers() -> None:
    records = provider_stream(providers=100, seed=2)
    profiles = by_type(records, "provider.profile_updated")
    assert {"DJ", "Sound Service", "Photographer", "Live Band"} <= {p["category"] for p in profiles}
    assert sum(p["status"] == "active" for p in profiles) / len(profiles) > 0.7
    bookings = [b["booking_id"] for b in by_type(records, "booking.confirmed")]
    assert len(bookings) == len(set(bookings)) > 100
    assert {r["rating"] for r in by_type(records, "review.posted")} <= {1, 2, 3, 4, 5}


def test_workflows() -> None:
    records = workflow_stream(workflows=200, seed=2)
    created = by_type(records, "workflow.created")
    assert any(w["is_template"] for w in created) and not all(w["is_template"] for w in created)
    versions: dict[str, list[int]] = defaultdict(list)
    deleted: set[str] = set()
    for record in records:
        payload = record.value["payload"]
        assert payload["workflow_id"] not in deleted, "nothing follows workflow.deleted"
        if record.value["type"] == "workflow.version_saved":
            versions[payload["workflow_id"]].append(payload["version_number"])
            assert isinstance(payload["nodes"], list) and isinstance(payload["edges"], list)
        elif record.value["type"] == "workflow.deleted":
            deleted.add(payload["workflow_id"])
    assert deleted
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values())


def test_too_few_users_is_rejected() -> None:
    with pytest.raises(ValueError, match="users must be at least 2"):
        thread_stream(threads=3, users=1)


def test_topics_match_the_schemas_registry() -> None:
    import readside.schemas

    assert set(TOPICS) == set(readside.schemas.TOPICS)
