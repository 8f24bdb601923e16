"""Support-desk requests read model, the views: which requests each technician view holds, as
the contract's rule in Python (``in_view``, the reference the tests compare with) and as the SQL
the partial indexes and the API's queries use, side by side:

- the shared views (membership depends on the row alone): ``_SHARED`` / ``SHARED_VIEW_SQL``
  (on ``requests_rows``), kept as counters (``counter_keys``);
- the technician's views: ``_TECHNICIAN`` / ``TECHNICIAN_VIEW_SQL`` (on ``request_assignees``,
  whose rows copy the columns these need), kept as counters per technician;
- the time windows (membership moves with the clock): ``window_starts`` + ``in_view`` /
  ``WINDOW_SQL`` (on ``requests_rows``, bounds named by the window); counted per hour
  (``window_keys``) plus ``PARTIAL_HOUR_SQL`` for the partial hour at a window's start.

Counters and versions are kept per scope (``counter_scopes``): all business units (``ALL_SCOPE``)
and the row's own. tests/integration/test_requests_views.py holds ``in_view`` and the SQL forms
equal on random rows; tests/integration/test_requests_projection.py the counters and pages.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from readside.readmodels.requests.fold import SOLVED, RequestRow

__all__ = [
    "ALL_SCOPE",
    "COUNTED_VIEWS",
    "PARTIAL_HOUR_SQL",
    "SHARED_VIEWS",
    "SHARED_VIEW_SQL",
    "TECHNICIAN_VIEWS",
    "TECHNICIAN_VIEW_SQL",
    "TICKET_TYPES",
    "VIEWS",
    "WINDOW_BUCKET",
    "WINDOW_SQL",
    "WINDOW_VIEWS",
    "bucket_of",
    "counter_keys",
    "counter_scopes",
    "in_view",
    "window_keys",
    "window_starts",
]

ALL_SCOPE = "*"

# The views in the contract's order (CONTRACT §2, technician views).
VIEWS = (
    "unassigned",
    "all_unsolved",
    "my_unsolved",
    "recently_updated",
    "recently_solved",
    "all_your_requests",
    "urgent_high_priority",
    "pending_requester_response",
    "pending_subtask",
    "new_today",
    "in_progress",
)
TICKET_TYPES = ("all", "parents", "subtasks")
WINDOW_VIEWS = ("recently_updated", "recently_solved", "new_today")  # membership moves with the clock
TECHNICIAN_VIEWS = ("my_unsolved", "all_your_requests")  # depend on the viewing technician
SHARED_VIEWS = tuple(v for v in VIEWS if v not in WINDOW_VIEWS and v not in TECHNICIAN_VIEWS)
COUNTED_VIEWS = SHARED_VIEWS + TECHNICIAN_VIEWS  # kept as counters; windows are counted at query time


# Each view's rule in Python: the shared ones on the row alone, the technician's for an assignee.
_SHARED: dict[str, Callable[[RequestRow], bool]] = {
    "unassigned": lambda r: r.unsolved and r.unassigned,
    "all_unsolved": lambda r: r.unsolved,
    "urgent_high_priority": lambda r: r.unsolved and r.urgent_high,
    "pending_requester_response": lambda r: r.status == "pending_requester",
    "pending_subtask": lambda r: r.status == "pending_subtask",
    "in_progress": lambda r: r.status == "in_progress",
}
_TECHNICIAN: dict[str, Callable[[RequestRow], bool]] = {
    "my_unsolved": lambda r: r.unsolved,
    "all_your_requests": lambda r: True,
}

# The SQL of each shared view's membership: the partial indexes and the API's queries use these
# very strings, so the planner always proves the index predicate.
SHARED_VIEW_SQL = {
    "unassigned": "listed AND unsolved AND unassigned",
    "all_unsolved": "listed AND unsolved",
    "urgent_high_priority": "listed AND unsolved AND urgent_high",
    "pending_requester_response": "listed AND status = 'pending_requester'",
    "pending_subtask": "listed AND status = 'pending_subtask'",
    "in_progress": "listed AND status = 'in_progress'",
}
# The technician's views on ``request_assignees`` (rows of listed requests only), for ``%(tech)s``.
TECHNICIAN_VIEW_SQL = {
    "my_unsolved": "technician_id = %(tech)s AND unsolved",
    "all_your_requests": "technician_id = %(tech)s",
}


def window_starts(now: datetime) -> dict[str, datetime]:
    """Each time window's inclusive lower bound at ``now`` (UTC)."""
    now = now.astimezone(UTC)
    return {
        "recently_updated": now - timedelta(hours=24),
        "recently_solved": now - timedelta(days=7),
        "new_today": now.replace(hour=0, minute=0, second=0, microsecond=0),
    }


# The windows on ``requests_rows``, with each window's start (``window_starts``) as ``%(<view>)s``.
# updated_at >= solved_at and >= created_at always: the redundant bound lets the planner use
# the ordered (updated_at) index for the page, and keeps every window range bounded.
WINDOW_SQL = {
    "recently_updated": "listed AND updated_at >= %(recently_updated)s",
    "recently_solved": "listed AND status = 'solved' AND solved_at >= %(recently_solved)s "
    "AND updated_at >= %(recently_solved)s",
    "new_today": "listed AND created_at >= %(new_today)s AND updated_at >= %(new_today)s",
}
# The rows between a window's start and its first whole hour (``%(<view>_hour)s``), which the
# hourly counters (``window_keys``) do not cover.
PARTIAL_HOUR_SQL = {
    "recently_updated": "listed AND updated_at >= %(recently_updated)s AND updated_at < %(recently_updated_hour)s",
    "recently_solved": "listed AND status = 'solved' AND solved_at >= %(recently_solved)s "
    "AND solved_at < %(recently_solved_hour)s",
    "new_today": "listed AND created_at >= %(new_today)s AND created_at < %(new_today_hour)s",
}


def in_view(row: RequestRow, view: str, technician: str, now: datetime) -> bool:
    """The contract's membership rule, for the viewing ``technician`` at ``now`` (the reference)."""
    if not row.listed:
        return False
    if view in _SHARED:
        return _SHARED[view](row)
    if view in _TECHNICIAN:
        return technician in row.assignees and _TECHNICIAN[view](row)
    start = window_starts(now)[view]
    if view == "recently_updated":
        return row.updated_at >= start  # type: ignore[operator]
    if view == "recently_solved":
        return row.status == SOLVED and row.solved_at is not None and row.solved_at >= start
    if view == "new_today":
        return row.created_at >= start  # type: ignore[operator]
    raise ValueError(f"unknown view {view!r}")


def counter_scopes(row: RequestRow) -> tuple[str, ...]:
    """The counter scopes a listed row falls in: all business units, and its own."""
    return (ALL_SCOPE, str(row.business_unit_id)) if row.listed else ()


def counter_keys(row: RequestRow) -> set[tuple[str, str, str, bool]]:
    """``(scope, technician or '', view, is_subtask)`` of every counter the row adds one to.

    Only the views whose membership does not move with the clock; the time windows are counted
    at query time from their indexes.
    """
    keys: set[tuple[str, str, str, bool]] = set()
    for scope in counter_scopes(row):
        for view, member in _SHARED.items():
            if member(row):
                keys.add((scope, "", view, row.is_subtask))
        for view, member in _TECHNICIAN.items():
            if member(row):
                keys.update((scope, tech, view, row.is_subtask) for tech in row.assignees)
    return keys


WINDOW_BUCKET = timedelta(hours=1)


def bucket_of(at: datetime) -> datetime:
    """The start of the hour ``at`` falls in (UTC): the grain of the window counters."""
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def window_times(row: RequestRow) -> dict[str, datetime]:
    """The time each window tests, for the windows the row can be in at all."""
    if not row.listed:
        return {}
    out = {"recently_updated": row.updated_at, "new_today": row.created_at}
    if row.status == SOLVED and row.solved_at is not None:
        out["recently_solved"] = row.solved_at
    return out  # type: ignore[return-value]


def window_keys(row: RequestRow) -> set[tuple[str, str, datetime, bool]]:
    """``(scope, window, hour bucket, is_subtask)`` of every window counter the row adds one to.

    A window's count at ``now`` is the sum of the buckets from the first whole hour inside the
    window on, plus the rows of the partial hour at its start (a bounded index range); the
    buckets of the future count too, as the windows have no upper bound.
    """
    return {
        (scope, view, bucket_of(at), row.is_subtask)
        for scope in counter_scopes(row)
        for view, at in window_times(row).items()
    }
