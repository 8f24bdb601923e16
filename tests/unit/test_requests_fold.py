"""The request fold and the technician-view rules, as tables of cases from CONTRACT §1–§3, plus
Hypothesis properties (duplicates, merges, shuffles, the storage round trip).

The record helpers here are shared by the integration and e2e tests of the requests read model.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from readside.load import Record, request_stream
from readside.readmodels.requests.fold import (
    RequestRow,
    RequestState,
    dump_state,
    fold,
    fold_all,
    fold_into,
    load_state,
    render,
)
from readside.readmodels.requests.views import (
    COUNTED_VIEWS,
    VIEWS,
    WINDOW_BUCKET,
    WINDOW_VIEWS,
    counter_keys,
    in_view,
    window_keys,
    window_starts,
)
from tests.support import T0, as_event, dedupe, merge_keeping_order, record, ts, with_stale_reads

# -- record helpers ------------------------------------------------------------------------------

def rec(type_: str, payload: dict[str, Any], event_id: str | None = None) -> Record:
    return record(type_, payload, event_id)


def created(rid: str, at: float = 0, *, requester: str = "u-7", bu: int = 3, title: str = "Printer offline",
            priority: str = "normal", status: str = "new", parent: str | None = None, stamp: str | None = None) -> Record:
    return rec("request.created", {
        "request_id": rid, "requester_id": requester, "business_unit_id": bu, "title": title,
        "priority": priority, "status": status, "parent_id": parent, "created_at": stamp or ts(at)})


def updated(rid: str, at: float, stamp: str | None = None, **changes: Any) -> Record:
    return rec("request.updated", {"request_id": rid, "changes": changes, "updated_at": stamp or ts(at)})


def assigned(rid: str, ids: list[str], at: float, stamp: str | None = None) -> Record:
    return rec("request.assigned", {"request_id": rid, "assignee_ids": ids, "assigned_at": stamp or ts(at)})


def taken(rid: str, tech: str, at: float, stamp: str | None = None) -> Record:
    return rec("request.taken", {"request_id": rid, "technician_id": tech, "taken_at": stamp or ts(at)})


def said(rid: str, mid: str, at: float, role: str = "requester", sender: str = "u-7", content: str | None = None,
         stamp: str | None = None) -> Record:
    return rec("request.message_created", {
        "request_id": rid, "message_id": mid, "sender_id": sender, "sender_role": role,
        "content": f"message {mid}" if content is None else content, "created_at": stamp or ts(at)})


def seen(rid: str, reader: str, role: str, up_to: float, at: float) -> Record:
    return rec("request.message_read", {
        "request_id": rid, "reader_id": reader, "reader_role": role, "read_up_to": ts(up_to), "read_at": ts(at)})


def rows_of(records: list[Record]) -> dict[str, RequestRow]:
    return {rid: render(s) for rid, s in fold_all(as_event(r) for r in records).items()}


def row(*records: Record) -> RequestRow:
    rows = rows_of(list(records))
    assert len(rows) == 1
    return next(iter(rows.values()))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- tables --------------------------------------------------------------------------------------

def test_created_request_item_follows_the_contract():
    r = row(created("r-1", 0, parent="r-0", priority="high", status="open"))
    assert r.listed and r.is_subtask and r.unsolved and r.unassigned and r.urgent_high
    assert r.item == {
        "id": "r-1", "title": "Printer offline", "status": "open", "priority": "high", "business_unit_id": 3,
        "requester_id": "u-7", "assignee_ids": [], "parent_id": "r-0", "is_subtask": True,
        "created_at": at(0), "updated_at": at(0), "solved_at": None, "last_message": None,
        "requester_unread": False, "technician_unread": False,
    }


@pytest.mark.parametrize(
    ("records", "status", "solved_at"),
    [
        pytest.param([created("r", 0)], "new", None, id="new"),
        pytest.param([created("r", 0, status="solved")], "solved", 0, id="created-solved-at-created_at"),
        pytest.param([created("r", 0), updated("r", 10, status="solved")], "solved", 10, id="moving-to-solved"),
        pytest.param([created("r", 0), updated("r", 10, status="solved"), updated("r", 20, status="open")], "open", None, id="moving-away-clears"),
        pytest.param([created("r", 0), updated("r", 10, status="solved"), updated("r", 20, status="closed")], "closed", None, id="closed-clears"),
        pytest.param([created("r", 0), updated("r", 10, status="solved"), updated("r", 20, status="solved")], "solved", 10, id="solved-again-keeps-first"),
        pytest.param([created("r", 0), updated("r", 10, status="solved"), updated("r", 20, priority="low")], "solved", 10, id="other-change-keeps-solved_at"),
        pytest.param([created("r", 0), updated("r", 10, status="solved"), updated("r", 20, status="open"), updated("r", 30, status="solved")], "solved", 30, id="solved-again-later"),
        pytest.param([created("r", 0, status="solved"), updated("r", 5, status="solved")], "solved", 0, id="created-solved-then-solved"),
        pytest.param([created("r", 0), updated("r", 20, status="open"), updated("r", 10, status="solved")], "open", None, id="older-update-arriving-late-loses"),
        pytest.param([created("r", 0), updated("r", 30, status="solved"), updated("r", 20, status="solved"), updated("r", 10, status="open")], "solved", 20, id="late-solved-starts-the-run"),
    ],
)
def test_status_and_solved_at(records, status, solved_at):
    r = row(*records)
    assert r.status == status
    assert r.solved_at == (None if solved_at is None else at(solved_at))
    assert r.item["solved_at"] == r.solved_at


@pytest.mark.parametrize(
    ("records", "updated_at"),
    [
        pytest.param([created("r", 0)], 0, id="created_at"),
        pytest.param([created("r", 0), updated("r", 10, title="x")], 10, id="update"),
        pytest.param([created("r", 0), updated("r", 10)], 10, id="no-op-update-counts"),
        pytest.param([created("r", 0), taken("r", "t1", 10), taken("r", "t1", 20)], 20, id="no-op-take-counts"),
        pytest.param([created("r", 0), assigned("r", [], 15)], 15, id="assignment"),
        pytest.param([created("r", 0), said("r", "m1", 12)], 12, id="message"),
        pytest.param([created("r", 0), said("r", "m1", 12), seen("r", "t1", "technician", 12, 50)], 12, id="reads-do-not-count"),
        pytest.param([created("r", 0), updated("r", 40, title="x"), said("r", "m1", 12)], 40, id="latest-not-last"),
        pytest.param([created("r", 100), said("r", "m1", 12)], 100, id="earlier-event-never-lowers"),
    ],
)
def test_updated_at(records, updated_at):
    assert row(*records).updated_at == at(updated_at)


@pytest.mark.parametrize(
    ("records", "assignees"),
    [
        pytest.param([created("r")], [], id="none"),
        pytest.param([created("r"), taken("r", "t2", 5), taken("r", "t1", 6)], ["t1", "t2"], id="takes-add-sorted"),
        pytest.param([created("r"), taken("r", "t1", 5), assigned("r", ["t3", "t2"], 10)], ["t2", "t3"], id="assignment-replaces"),
        pytest.param([created("r"), assigned("r", ["t3"], 10), taken("r", "t1", 15)], ["t1", "t3"], id="take-after-assignment-adds"),
        pytest.param([created("r"), assigned("r", ["t3"], 10), assigned("r", [], 20)], [], id="empty-assignment-clears"),
        pytest.param([created("r"), assigned("r", ["t3"], 10), taken("r", "t1", 10)], ["t3"], id="take-at-the-same-instant-is-replaced"),
        pytest.param([created("r"), assigned("r", ["t3"], 20), assigned("r", ["t4"], 10)], ["t3"], id="older-assignment-loses"),
        pytest.param([created("r"), assigned("r", ["t3"], 20), taken("r", "t1", 15)], ["t3"], id="older-take-loses"),
        pytest.param([created("r"), taken("r", "t1", 5), assigned("r", [], 10), taken("r", "t1", 15)], ["t1"], id="take-again"),
        pytest.param([created("r"), assigned("r", ["t1", "t1", "t0"], 10)], ["t0", "t1"], id="assignment-is-a-set"),
    ],
)
def test_assignees(records, assignees):
    r = row(*records)
    assert list(r.assignees) == r.item["assignee_ids"] == assignees
    assert r.unassigned is (not assignees)


def test_last_message_is_latest_by_time_then_id_normalized():
    r = row(
        created("r"),
        said("r", "m-b", 10, content="b"),
        said("r", "m-c", 10, role="technician", sender="t1", content="  Hi\n\n there\t " + "é" * 120),
        said("r", "m-a", 10, content="a"),
        said("r", "m-0", 5, content="older"),
    )
    assert r.item["last_message"] == {"content": ("Hi there " + "é" * 120)[:100], "sender_role": "technician", "created_at": at(10)}


@pytest.mark.parametrize(
    ("records", "requester_unread", "technician_unread"),
    [
        pytest.param([created("r")], False, False, id="no-messages"),
        pytest.param([created("r"), said("r", "m1", 10, role="technician", sender="t1")], True, False, id="technician-message-unread-by-requester"),
        pytest.param([created("r"), said("r", "m1", 10)], False, True, id="requester-message-unread-by-technicians"),
        pytest.param([created("r"), said("r", "m1", 10, role="technician", sender="t1"), seen("r", "u-7", "requester", 10, 11)], False, False, id="read-up-to-the-message"),
        pytest.param([created("r"), said("r", "m1", 10, role="technician", sender="t1"), seen("r", "u-7", "requester", 9, 11)], True, False, id="strictly-after-the-marker"),
        pytest.param([created("r"), said("r", "m1", 10, role="technician", sender="t1"), seen("r", "t1", "technician", 10, 11)], True, False, id="technician-marker-is-not-the-requesters"),
        pytest.param([created("r"), said("r", "m1", 10), seen("r", "t1", "technician", 10, 11)], False, False, id="any-technician-reads"),
        # Markers only move forward (CONTRACT §3): the greatest read_up_to, whatever read_at or arrival.
        pytest.param([created("r"), said("r", "m1", 10), seen("r", "t1", "technician", 10, 11), seen("r", "t2", "technician", 5, 12)], False, False, id="furthest-technician-marker-not-latest-read_at"),
        pytest.param([created("r"), said("r", "m1", 10), seen("r", "t2", "technician", 5, 12), seen("r", "t1", "technician", 10, 11)], False, False, id="furthest-technician-marker-not-last-arrival"),
        pytest.param([created("r"), said("r", "m1", 10), seen("r", "t1", "technician", 10, 11), seen("r", "t1", "technician", 5, 12)], False, False, id="technician-stale-read-after-the-newer-one"),
        pytest.param([created("r"), said("r", "m1", 10, role="technician", sender="t1"), seen("r", "u-7", "requester", 10, 20), seen("r", "u-7", "requester", 5, 15)], False, False, id="requester-older-read-arriving-late"),
        pytest.param([created("r"), said("r", "m1", 10, role="technician", sender="t1"), seen("r", "u-7", "requester", 10, 20), seen("r", "u-7", "requester", 5, 30)], False, False, id="requester-stale-read-after-the-newer-one"),
        pytest.param([created("r"), said("r", "m1", 10, role="technician", sender="t1"), seen("r", "u-7", "requester", 5, 30), seen("r", "u-7", "requester", 10, 20)], False, False, id="requester-stale-read-before-the-newer-one"),
        pytest.param([created("r"), said("r", "m1", 10, role="technician", sender="t1"), said("r", "m2", 20, role="technician", sender="t1"), seen("r", "u-7", "requester", 10, 20), seen("r", "u-7", "requester", 5, 30)], True, False, id="requester-stale-read-keeps-the-later-message-unread"),
        pytest.param([created("r"), seen("r", "u-7", "requester", 10, 11), said("r", "m1", 10, role="technician", sender="t1")], False, False, id="marker-before-its-message"),
        pytest.param([created("r"), said("r", "m1", 10), said("r", "m2", 20, role="technician", sender="t1"), seen("r", "t1", "technician", 20, 21)], True, False, id="own-side-messages-do-not-count"),
    ],
)
def test_unread_flags(records, requester_unread, technician_unread):
    r = row(*records)
    assert (r.item["requester_unread"], r.item["technician_unread"]) == (requester_unread, technician_unread)


@pytest.mark.parametrize(
    ("records", "field", "value"),
    [
        pytest.param([created("r", 0, bu=3), updated("r", 10, business_unit_id=5)], "business_unit_id", 5, id="business-unit-moves"),
        pytest.param([created("r", 0), updated("r", 20, title="new"), updated("r", 10, title="old")], "title", "new", id="title-latest-time"),
        pytest.param([created("r", 0), updated("r", 10, priority="low"), updated("r", 10, priority="high")], "priority", "low", id="tie-larger-value"),
        pytest.param([created("r", 0, priority="urgent"), updated("r", 0, priority="high")], "priority", "high", id="tie-update-beats-create"),
        pytest.param([created("r", 0, title="first"), created("r", 5, title="second", bu=9)], "title", "first", id="second-create-ignored"),
    ],
)
def test_registers(records, field, value):
    assert row(*records).item[field] == value


def test_events_before_the_create_are_kept_and_the_request_is_listed_once_created():
    early = [updated("r", 10, status="in_progress"), taken("r", "t1", 12), said("r", "m1", 14)]
    assert row(*early).listed is False and row(*early).item is None
    assert row(*early, created("r", 0)) == row(created("r", 0), *early)


# -- views ---------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)


def _stamp(d: datetime) -> str:
    return d.isoformat().replace("+00:00", "Z")


def _views(*records: Record, tech: str = "t1", now: datetime = NOW) -> set[str]:
    r = row(*records)
    return {v for v in VIEWS if in_view(r, v, tech, now)}


@pytest.mark.parametrize(
    ("records", "views"),
    [
        pytest.param([created("r", stamp="2026-11-01T00:00:00Z")], {"unassigned", "all_unsolved"}, id="new-old-unassigned"),
        pytest.param([created("r", stamp="2026-11-01T00:00:00Z", priority="urgent"), taken("r", "t1", 0, stamp="2026-11-02T00:00:00Z")],
                     {"all_unsolved", "my_unsolved", "all_your_requests", "urgent_high_priority"}, id="mine-urgent"),
        pytest.param([created("r", stamp="2026-11-01T00:00:00Z", priority="high"), taken("r", "t2", 0, stamp="2026-11-02T00:00:00Z")],
                     {"all_unsolved", "urgent_high_priority"}, id="someone-elses-high"),
        pytest.param([created("r", stamp="2026-11-01T00:00:00Z", status="pending_requester")],
                     {"unassigned", "all_unsolved", "pending_requester_response"}, id="pending-requester"),
        pytest.param([created("r", stamp="2026-11-01T00:00:00Z", status="pending_subtask")],
                     {"unassigned", "all_unsolved", "pending_subtask"}, id="pending-subtask"),
        pytest.param([created("r", stamp="2026-11-01T00:00:00Z", status="in_progress")],
                     {"unassigned", "all_unsolved", "in_progress"}, id="in-progress"),
        pytest.param([created("r", stamp="2026-11-01T00:00:00Z"), assigned("r", ["t1"], 0, stamp="2026-11-02T00:00:00Z"),
                      updated("r", 0, stamp="2026-11-15T15:00:00Z", status="solved")],
                     {"all_your_requests", "recently_solved"}, id="solved-7-days-ago-inclusive"),
        pytest.param([created("r", stamp="2026-11-01T00:00:00Z"), updated("r", 0, stamp="2026-11-15T14:59:59.999Z", status="solved")],
                     set(), id="solved-just-over-7-days-ago"),
        pytest.param([created("r", stamp="2026-11-01T00:00:00Z"), updated("r", 0, stamp="2026-11-21T15:00:00Z", status="closed")],
                     {"recently_updated"}, id="closed-updated-24h-ago-inclusive"),
        pytest.param([created("r", stamp="2026-11-01T00:00:00Z"), said("r", "m", 0, stamp="2026-11-21T14:59:59.999Z")],
                     {"unassigned", "all_unsolved"}, id="updated-just-over-24h-ago"),
        pytest.param([created("r", stamp="2026-11-22T00:00:00Z")],
                     {"unassigned", "all_unsolved", "recently_updated", "new_today"}, id="created-at-midnight"),
        pytest.param([created("r", stamp="2026-11-21T23:59:59.999Z")],
                     {"unassigned", "all_unsolved", "recently_updated"}, id="created-yesterday"),
    ],
)
def test_view_membership(records, views):
    assert _views(*records) == views


def test_unlisted_rows_belong_to_no_view_and_no_counter():
    r = row(updated("r", 10, status="open"), taken("r", "t1", 12))
    assert not any(in_view(r, v, "t1", NOW) for v in VIEWS)
    assert counter_keys(r) == set()


def test_counter_keys_cover_both_scopes_and_each_assignee():
    r = row(created("r", 0, bu=4, parent="p"), assigned("r", ["t1", "t2"], 5))
    assert counter_keys(r) == {
        (scope, tech, view, True)
        for scope in ("*", "4")
        for tech, view in [("", "all_unsolved"), ("t1", "my_unsolved"), ("t2", "my_unsolved"),
                           ("t1", "all_your_requests"), ("t2", "all_your_requests")]
    }


def test_state_round_trips_through_storage():
    records = [created("r", 0, parent="p"), updated("r", 10, status="solved", title="t"), taken("r", "t1", 11),
               assigned("r", ["t2"], 9), said("r", "m1", 12, content="hi"), seen("r", "t1", "technician", 12, 13),
               seen("r", "u-7", "requester", 1, 14)]
    state = fold_all(as_event(r) for r in records)["r"]
    assert load_state("r", dump_state(state)) == state
    assert dump_state(load_state("r", dump_state(state))) == dump_state(state)
    assert load_state("x", dump_state(RequestState("x"))) == RequestState("x")


def test_fold_is_pure():
    state = RequestState("r")
    new = fold(state, as_event(taken("r", "t1", 5)))
    assert state.takes == {} and new.takes == {"t1": at(5)}


# -- properties ----------------------------------------------------------------------------------

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)

streams = st.builds(
    lambda seed, n: request_stream(requests=n, steps_per_request=(2, 14), technicians=4, seed=seed),
    st.integers(0, 10_000),
    st.integers(1, 8),
)


def _projected(records: list[Record]) -> dict[str, RequestRow]:
    return rows_of(records)


@SETTINGS
@given(streams, st.data())
def test_duplicated_events_project_the_same(stream, data):
    picks = data.draw(st.lists(st.sampled_from(range(len(stream))), max_size=len(stream)))
    noisy = list(stream)
    for i in picks:  # a retrying producer re-sends event i somewhere after its first delivery
        pos = data.draw(st.integers(i + 1, len(noisy)))
        noisy.insert(pos, stream[i])
    assert _projected(dedupe(noisy)) == _projected(stream)
    assert _projected(noisy) == _projected(stream)  # the fold alone also tolerates redelivery


@SETTINGS
@given(streams, st.randoms(use_true_random=False))
def test_any_merge_keeping_each_requests_order_projects_the_same(stream, rnd):
    # What the contract guarantees: per-key order within the topic; partitions interleave freely.
    merged = merge_keeping_order(stream, lambda r: r.key, rnd)
    assert _projected(merged) == _projected(stream)


@SETTINGS
@given(streams, st.randoms(use_true_random=False))
def test_even_a_full_shuffle_projects_like_time_order(stream, rnd):
    # Stronger than the contract needs: every part of the state merges commutatively.
    shuffled = list(stream)
    rnd.shuffle(shuffled)
    assert _projected(shuffled) == _projected(stream)


@SETTINGS
@given(streams, st.randoms(use_true_random=False))
def test_stale_reads_anywhere_change_nothing(stream, rnd):
    # An earlier read_up_to sent with a later read_at (an old tab): read markers only move forward.
    noisy = with_stale_reads(stream, rnd)
    assert _projected(noisy) == _projected(stream)
    rnd.shuffle(noisy)
    assert _projected(noisy) == _projected(stream)


@SETTINGS
@given(streams, st.lists(st.integers(1, 40), max_size=6), st.randoms(use_true_random=False))
def test_folding_in_batches_through_storage_equals_one_fold(stream, cuts, rnd):
    # What the store does: load the stored bytes, fold a batch, store the bytes again; stale reads
    # included, in any order.
    stored: dict[str, bytes] = {}
    events = [as_event(r) for r in with_stale_reads(stream, rnd)]
    rnd.shuffle(events)
    bounds = sorted({min(c, len(events)) for c in cuts} | {0, len(events)})
    for lo, hi in zip(bounds, bounds[1:]):
        states: dict[str, RequestState] = {}
        for e in events[lo:hi]:
            rid = e.payload.request_id  # type: ignore[attr-defined]
            if rid not in states:
                states[rid] = load_state(rid, stored[rid]) if rid in stored else RequestState(rid)
            fold_into(states[rid], e)
        stored.update({rid: dump_state(s) for rid, s in states.items()})
    assert {rid: render(load_state(rid, b)) for rid, b in stored.items()} == _projected(stream)


@SETTINGS
@given(streams, st.sampled_from(["tech-1", "tech-2", "tech-9"]))
def test_counter_keys_agree_with_the_view_rules(stream, tech):
    rows = _projected(stream).values()
    for r in rows:
        keys = counter_keys(r)
        for view in COUNTED_VIEWS:
            member = in_view(r, view, tech, NOW)
            scoped = {(s, t, v) for s, t, v, _ in keys if v == view and t in ("", tech)}
            assert member == bool(scoped), (view, r)
            if member:
                assert scoped == {("*", "" if view not in ("my_unsolved", "all_your_requests") else tech, view),
                                  (str(r.business_unit_id), "" if view not in ("my_unsolved", "all_your_requests") else tech, view)}


@SETTINGS
@given(streams, st.integers(-3 * 24 * 60, 20 * 24 * 60))
def test_window_counters_plus_the_partial_hour_count_each_window(stream, minutes):
    # What the counts query does: whole hours from the counters, the partial first hour from rows.
    rows = [r for r in _projected(stream).values() if r.listed]
    now = datetime(2026, 11, 1, 8, tzinfo=UTC) + timedelta(minutes=minutes, seconds=minutes % 53)
    keys = Counter(k for r in rows for k in window_keys(r))
    for view, start in window_starts(now).items():
        first = start.replace(minute=0, second=0, microsecond=0)
        first = first if first == start else first + WINDOW_BUCKET
        hours = sum(n for (scope, v, bucket, _), n in keys.items() if scope == "*" and v == view and bucket >= first)
        field = {"recently_updated": "updated_at", "recently_solved": "solved_at", "new_today": "created_at"}[view]
        partial = sum(1 for r in rows if view in _windows(r) and start <= getattr(r, field) < first)
        assert hours + partial == sum(in_view(r, view, "t", now) for r in rows), view


def _windows(r: RequestRow) -> set[str]:
    return {v for _, v, _, _ in window_keys(r)} & set(WINDOW_VIEWS)
