"""Each technician view's rule in Python (``views.in_view``, the reference) and in SQL (the partial
indexes' and the API's ``SHARED_VIEW_SQL``, ``TECHNICIAN_VIEW_SQL``, ``WINDOW_SQL``), evaluated by
PostgreSQL on the columns ``apply`` stores for a row, hold the same requests for any row,
technician and time (``readside.readmodels.requests.views``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from readside.readmodels.requests.fold import RequestRow
from readside.readmodels.requests.views import (
    SHARED_VIEW_SQL,
    TECHNICIAN_VIEW_SQL,
    VIEWS,
    WINDOW_SQL,
    in_view,
    window_starts,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
TECHS = ("tech-1", "tech-2", "tech-3")
STATUSES = ("new", "open", "in_progress", "pending_requester", "pending_subtask", "solved", "closed")

offsets = st.integers(-10 * 24 * 60, 2 * 60).map(lambda m: timedelta(minutes=m))


@st.composite
def rows(draw: st.DrawFn, rid: str) -> RequestRow:
    if draw(st.integers(0, 7)) == 0:
        return RequestRow(rid, False)  # events before its request.created: never in a view
    status = draw(st.sampled_from(STATUSES))
    created_at = NOW + draw(offsets)
    solved_at = created_at + draw(offsets.map(abs)) if status == "solved" else None
    # updated_at >= created_at and >= solved_at, as ``fold.render`` gives it
    updated_at = max(created_at, solved_at or created_at) + draw(offsets.map(abs))
    return RequestRow(
        rid,
        True,
        status=status,
        priority=draw(st.sampled_from(["low", "normal", "high", "urgent"])),
        business_unit_id=draw(st.integers(1, 3)),
        is_subtask=draw(st.booleans()),
        assignees=tuple(sorted(draw(st.sets(st.sampled_from(TECHS), max_size=2)))),
        created_at=created_at,
        updated_at=updated_at,
        solved_at=solved_at,
    )


batches = st.integers(1, 8).flatmap(lambda n: st.tuples(*(rows(f"r{i}") for i in range(n))))

_COLUMNS = (
    "request_id", "listed", "status", "priority", "business_unit_id", "is_subtask", "unsolved", "unassigned",
    "urgent_high", "created_at", "updated_at", "solved_at",
)
_TYPES = ("text", "bool", "text", "text", "int8", "bool", "bool", "bool", "bool", "timestamptz", "timestamptz", "timestamptz")


def _member(view: str) -> str:
    """The view's SQL as the queries apply it, for one ``requests_rows`` row ``r``."""
    if view in TECHNICIAN_VIEW_SQL:  # request_assignees holds the listed requests' assignees
        return (
            "EXISTS (SELECT FROM unnest(%(a_request)s::text[], %(a_tech)s::text[], %(a_unsolved)s::bool[]) "
            f"AS a(request_id, technician_id, unsolved) WHERE a.request_id = r.request_id AND {TECHNICIAN_VIEW_SQL[view]})"
        )
    return f"coalesce(({SHARED_VIEW_SQL.get(view) or WINDOW_SQL[view]}), false)"


_EVAL = (
    f"SELECT r.request_id, {', '.join(_member(v) for v in VIEWS)} "
    f"FROM unnest({', '.join(f'%(c{i})s::{t}[]' for i, t in enumerate(_TYPES))}) AS r({', '.join(_COLUMNS)})"
)


def _stored(batch: tuple[RequestRow, ...]) -> dict[str, list]:
    """The rows' columns as ``requests_rows`` and ``request_assignees`` hold them."""
    columns = [[getattr(r, c) for r in batch] for c in _COLUMNS]
    assignees = [(r.request_id, t, r.unsolved) for r in batch if r.listed for t in r.assignees]
    return {
        **{f"c{i}": col for i, col in enumerate(columns)},
        "a_request": [a[0] for a in assignees],
        "a_tech": [a[1] for a in assignees],
        "a_unsolved": [a[2] for a in assignees],
    }


def test_every_view_holds_the_same_requests_in_python_and_in_sql(pg_admin_url: str) -> None:
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:

        @SETTINGS
        @given(batches, st.sampled_from(TECHS), st.integers(-3 * 24 * 60, 3 * 24 * 60))
        def check(batch: tuple[RequestRow, ...], technician: str, shift: int) -> None:
            now = NOW + timedelta(minutes=shift)
            params = {**_stored(batch), **window_starts(now), "tech": technician}
            got = {rid: members for rid, *members in conn.execute(_EVAL, params).fetchall()}
            for row in batch:
                for view, member in zip(VIEWS, got[row.request_id]):
                    assert member == in_view(row, view, technician, now), (view, row)

        check()
