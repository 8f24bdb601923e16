"""The thread fold and preview rules, as tables of cases from CONTRACT §2."""

from __future__ import annotations

from datetime import datetime

import pytest

from readside.readmodels.threads.fold import ThreadState, fold, fold_all, message_preview, normalize_text, render
from tests.support import (
    as_event,
    deleted,
    message,
    payment,
    pinned,
    read,
    started,
    state_changed,
)


def previews(*records):
    states = fold_all(as_event(r) for r in records)
    assert len(states) == 1
    return {row.role: row for row in render(next(iter(states.values())))}


@pytest.mark.parametrize(
    ("content", "key", "args", "attachment", "expected"),
    [
        pytest.param("x", "new_booking_request", None, None, ("New booking request", "new_booking_request", {}), id="booking"),
        pytest.param("x", "payment_received", None, None, ("Payment received", "payment_received", {}), id="payment"),
        pytest.param(
            "x", "event_reminder", {"days_before": 3, "date": "2026-12-05"}, None,
            ("Event in 3 days: 2026-12-05", "event_reminder", {"daysBefore": 3, "date": "2026-12-05"}), id="reminder",
        ),
        pytest.param(
            "x", "event_reminder", {"days_before": 1, "date": "2026-12-05"}, None,
            ("Event in 1 days: 2026-12-05", "event_reminder", {"daysBefore": 1, "date": "2026-12-05"}), id="reminder-1-days",
        ),
        pytest.param("  Hi\n\n there\t you  ", None, None, None, ("Hi there you", None, None), id="whitespace-collapsed"),
        pytest.param("a\u00a0\u00a0b", None, None, None, ("a b", None, None), id="nbsp-is-whitespace"),
        pytest.param("é" * 150, None, None, None, ("é" * 100, None, None), id="cut-at-100-code-points"),
        pytest.param("a" * 99 + " b", None, None, None, ("a" * 99 + " ", None, None), id="space-at-cut-stays"),
        pytest.param("  ", None, None, {"kind": "image", "url": "u"}, ("Sent an image", None, None), id="image"),
        pytest.param("", None, None, {"kind": "file", "url": "u"}, ("Sent a file", None, None), id="file"),
        pytest.param("", None, None, None, ("", None, None), id="empty"),
        pytest.param("hello", "something_new", None, None, ("hello", None, None), id="unknown-key-previews-content"),
        pytest.param("see pic", None, None, {"kind": "image", "url": "u"}, ("see pic", None, None), id="content-beats-attachment"),
    ],
)
def test_message_preview(content, key, args, attachment, expected):
    assert message_preview(content, key, args, attachment) == expected


def test_normalized_text_has_no_whitespace_runs_and_at_most_100_code_points():
    text = normalize_text(" a \u2003 b\n\t" * 40)
    assert len(text) == 100 and "  " not in text and text.startswith("a b")


def test_empty_thread_preview_uses_created_at_and_nulls():
    rows = previews(started("t1", at=5))
    client = rows["client"].item
    assert client["last_message_preview"] is None and client["last_actor"] is None
    assert client["preview_key"] is None and client["preview_args"] is None
    assert client["last_ts"].isoformat().startswith("2026-11-22T10:00:05")
    assert client["unread_count"] == 0 and client["meta"]["message_count"] == 0
    assert client["counterparty"] == {"name": "DJ Bob", "avatar_url": None}
    assert rows["provider"].item["counterparty"] == {"name": "Ann Lee", "avatar_url": None}


def test_counterparty_falls_back_to_name_and_rewrites_data_avatars():
    rows = previews(started("t1", business_name=None, provider_avatar="data:image/png;base64,AAA", client_avatar="https://x/a.jpg"))
    assert rows["client"].item["counterparty"] == {"name": "Bob Khumalo", "avatar_url": "/v1/img/avatar/u-p"}
    assert rows["provider"].item["counterparty"] == {"name": "Ann Lee", "avatar_url": "https://x/a.jpg"}


def test_visibility_per_side_and_latest_by_time_then_id():
    rows = previews(
        started("t1"),
        message("t1", "m1", 10, content="to both"),
        message("t1", "m3", 20, sender="u-p", sender_type="provider", content="provider only", visible_to="provider"),
        message("t1", "m2", 20, sender=None, sender_type="system", content="client only", visible_to="client"),
    )
    assert rows["client"].item["last_message_preview"] == "client only"
    assert rows["client"].item["meta"]["message_count"] == 2
    assert rows["provider"].item["last_message_preview"] == "provider only"
    assert rows["provider"].item["last_actor"] == "provider"
    tie = previews(started("t1"), message("t1", "m-a", 10, content="a"), message("t1", "m-b", 10, content="b"))
    assert tie["client"].item["last_message_preview"] == "b"


def test_unread_counts_follow_read_markers_strictly_after_and_skip_own_messages():
    rows = previews(
        started("t1"),
        message("t1", "m1", 10, sender="u-c"),
        message("t1", "m2", 20, sender="u-p", sender_type="provider"),
        message("t1", "m3", 30, sender="u-p", sender_type="provider"),
        message("t1", "m4", 40, sender=None, sender_type="system", system_key="new_booking_request"),
        read("t1", "u-c", up_to=20, at=25),
    )
    assert rows["client"].unread_count == 2  # m3 and the system message; m2 is at the marker
    assert rows["provider"].unread_count == 2  # m1 and the system message
    assert rows["client"].item["preview_key"] == "new_booking_request"
    assert rows["client"].item["last_actor"] == "system"


@pytest.mark.parametrize(
    ("reads", "unread_count"),
    [
        pytest.param([read("t1", "u-c", up_to=20, at=30), read("t1", "u-c", up_to=10, at=15)], 1, id="older-read-arriving-late"),
        pytest.param([read("t1", "u-c", up_to=10, at=15), read("t1", "u-c", up_to=20, at=30)], 1, id="newer-read-arriving-late"),
        # A stale client (an old tab) re-sends an old position later: the marker never moves back.
        pytest.param([read("t1", "u-c", up_to=20, at=30), read("t1", "u-c", up_to=10, at=40)], 1, id="stale-read-after-the-newer-one"),
        pytest.param([read("t1", "u-c", up_to=10, at=40), read("t1", "u-c", up_to=20, at=30)], 1, id="stale-read-before-the-newer-one"),
        pytest.param([read("t1", "u-c", up_to=30, at=31), read("t1", "u-c", up_to=0, at=90), read("t1", "u-c", up_to=10, at=50)], 0, id="several-stale-reads"),
        pytest.param([read("t1", "u-c", up_to=20, at=30), read("t1", "u-c", up_to=20, at=25)], 1, id="same-position-again"),
        pytest.param([read("t1", "u-p", up_to=30, at=31), read("t1", "u-c", up_to=10, at=11)], 2, id="markers-are-per-reader"),
    ],
)
def test_read_marker_is_the_greatest_read_up_to_whatever_read_at_or_arrival(reads, unread_count):
    messages = [message("t1", f"m{i}", i * 10, sender="u-p", sender_type="provider") for i in (1, 2, 3)]
    rows = previews(started("t1"), *messages, *reads)
    assert rows["client"].unread_count == unread_count
    greatest = max(datetime.fromisoformat(r.value["payload"]["read_up_to"]) for r in reads if r.value["payload"]["reader_id"] == "u-c")
    state = next(iter(fold_all(as_event(r) for r in (started("t1"), *reads)).values()))
    assert state.reads["u-c"][1] == greatest


def test_delete_falls_back_to_previous_message_and_counts_as_never_sent():
    rows = previews(
        started("t1"),
        message("t1", "m1", 10, sender="u-p", sender_type="provider", content="first"),
        message("t1", "m2", 20, sender="u-p", sender_type="provider", content="second"),
        deleted("t1", "m2", 30),
    )
    assert rows["client"].item["last_message_preview"] == "first"
    assert rows["client"].unread_count == 1
    assert rows["client"].item["meta"]["message_count"] == 1


def test_delete_before_create_keeps_the_message_deleted():
    rows = previews(started("t1"), deleted("t1", "m1", 30), message("t1", "m1", 10, content="gone"))
    assert rows["client"].item["last_message_preview"] is None
    assert rows["client"].item["meta"]["message_count"] == 0


def test_pins_are_per_user_latest_wins():
    rows = previews(
        started("t1"),
        pinned("t1", "u-c", True, 20),
        pinned("t1", "u-c", False, 10),
        pinned("t1", "u-p", False, 5),
    )
    assert rows["client"].item["pinned"] is True
    assert rows["provider"].item["pinned"] is False


def test_state_takes_latest_change_and_second_start_is_ignored():
    rows = previews(
        started("t1", state="pending_quote"),
        state_changed("t1", "booked", 50),
        state_changed("t1", "quoted", 40),
        started("t1", client="u-x", state="cancelled"),
    )
    assert rows["client"].user_id == "u-c"
    assert rows["client"].item["state"] == "booked"


@pytest.mark.parametrize(
    ("extra", "paid"),
    [
        pytest.param([], False, id="unpaid"),
        pytest.param([payment("t1", "pay-1", 60)], True, id="payment-event"),
        pytest.param([message("t1", "m9", 60, sender=None, sender_type="system", system_key="payment_received", visible_to="provider")], True, id="payment-message-invisible-to-client"),
        pytest.param(
            [message("t1", "m9", 60, sender=None, sender_type="system", system_key="payment_received"), deleted("t1", "m9", 70)],
            False, id="deleted-payment-message",
        ),
    ],
)
def test_personalized_video_hidden_until_paid(extra, paid):
    rows = previews(started("t1", service_type="personalized_video"), message("t1", "m1", 10), *extra)
    for row in rows.values():
        assert row.item["meta"]["paid"] is paid
        assert row.listed is paid


@pytest.mark.parametrize(
    "odd",
    [
        pytest.param(message("t1", "m9", 50, sender="u-x", sender_type="client", content="stranger"), id="stranger-as-client"),
        pytest.param(message("t1", "m9", 50, sender="u-x", sender_type="provider", content="stranger"), id="stranger-as-provider"),
        pytest.param(message("t1", "m9", 50, sender="u-p", sender_type="client", content="provider typed client"), id="provider-id-typed-client"),
        pytest.param(message("t1", "m9", 50, sender="u-c", sender_type="provider", content="client typed provider"), id="client-id-typed-provider"),
        pytest.param(
            message("t1", "m9", 50, sender="u-x", sender_type="provider", content="x", system_key="payment_received"),
            id="stranger-payment-key",
        ),
    ],
)
@pytest.mark.parametrize("start_first", [True, False], ids=["after-start", "before-start"])
def test_a_message_not_from_a_participant_counts_as_never_sent(odd, start_first):
    # Participants are known only from thread.started, which may arrive after the message: the
    # message is kept and judged at render time, so the result is the same in both orders.
    start = started("t1", service_type="personalized_video")
    history = [message("t1", "m1", 10, sender="u-p", sender_type="provider", content="hello")]
    records = [start, *history, odd] if start_first else [odd, *history, start]
    rows = previews(*records)
    assert rows == previews(start, *history)
    for row in rows.values():
        assert row.item["last_message_preview"] == "hello" and row.item["meta"]["message_count"] == 1
        assert row.item["meta"]["paid"] is False and not row.listed
    assert rows["client"].unread_count == 1 and rows["provider"].unread_count == 0


def test_system_messages_and_matching_senders_are_kept():
    rows = previews(
        started("t1"),
        message("t1", "m1", 10, sender="u-c", sender_type="client"),
        message("t1", "m2", 20, sender="u-p", sender_type="provider"),
        message("t1", "m3", 30, sender=None, sender_type="system", system_key="new_booking_request"),
    )
    assert rows["client"].item["meta"]["message_count"] == rows["provider"].item["meta"]["message_count"] == 3


def test_payment_before_thread_started():
    rows = previews(payment("t1", "pay-1", 1), started("t1", service_type="personalized_video", at=5))
    assert rows["client"].listed and rows["client"].item["meta"]["paid"]


def test_unknown_thread_renders_nothing():
    state = fold(ThreadState("t9"), as_event(message("t9", "m1", 10)))
    assert render(state) == []


def test_duplicate_message_id_first_wins():
    rows = previews(started("t1"), message("t1", "m1", 10, content="first"), message("t1", "m1", 20, content="second"))
    assert rows["client"].item["last_message_preview"] == "first"
    assert rows["client"].item["meta"]["message_count"] == 1


def test_fold_is_pure():
    state = ThreadState("t1")
    after = fold(state, as_event(message("t1", "m1", 10)))
    assert state.messages == {} and "m1" in after.messages
