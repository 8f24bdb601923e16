"""Read queries for the technician views: plain SQL, ``(conn, params) -> rows``.

A page is ONE statement, so the list, its total and every count come from one snapshot:

- the projection's generation (``readside.readmodels.pages.generation``);
- the version of the scope (a primary-key lookup);
- the maintained counters of the scope, the shared ones and the viewer's (one primary-key range);
- the three time windows, each the sum of its hourly counters from the first whole hour inside
  the window on (a primary-key range), plus an index-only range count of the partial hour at
  the window's start;
- the page: the ids from one range of the view's partial index (index-only, ``OFFSET``/``LIMIT``;
  ``LIMIT 0`` when the offset is past the view's counter, so a page past the end scans nothing),
  then the ready items of those ids by primary key, joined by PostgreSQL with ``,`` in page order.

Never a scan of the requests table, and never an aggregation over it: the counts endpoint runs
the same statement without the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from readside.readmodels.pages import generation, version_of
from readside.readmodels.requests.views import (
    ALL_SCOPE,
    PARTIAL_HOUR_SQL,
    SHARED_VIEW_SQL,
    TECHNICIAN_VIEW_SQL,
    TECHNICIAN_VIEWS,
    WINDOW_BUCKET,
    WINDOW_SQL,
    WINDOW_VIEWS,
    bucket_of,
    window_starts,
)

__all__ = ["Counts", "Page", "scope_version", "technician_views"]

GENERATION = generation("requests")
_KIND = {"all": "", "parents": " AND NOT is_subtask", "subtasks": " AND is_subtask"}


@dataclass(frozen=True)
class Counts:
    """Per view, ``(parents, subtasks)``."""

    by_view: dict[str, tuple[int, int]]

    def total(self, view: str, ticket_type: str = "all") -> int:
        parents, subtasks = self.by_view.get(view, (0, 0))
        return {"all": parents + subtasks, "parents": parents, "subtasks": subtasks}[ticket_type]


@dataclass(frozen=True)
class Page:
    generation: int
    version: int
    counts: Counts
    items: bytes  # the page's items joined with ``,``


def _bu(business_unit_id: int | None) -> str:
    return "" if business_unit_id is None else " AND business_unit_id = %(bu)s"


def _page_sql(view: str, business_unit_id: int | None, ticket_type: str) -> str:
    where = _bu(business_unit_id) + _KIND[ticket_type]
    if view in TECHNICIAN_VIEWS:
        table, member = "request_assignees", TECHNICIAN_VIEW_SQL[view]
    elif view in WINDOW_VIEWS:
        table, member = "requests_rows", WINDOW_SQL[view]
    else:
        table, member = "requests_rows", SHARED_VIEW_SQL[view]
    if view in WINDOW_VIEWS:
        limit = "%(limit)s"  # bounded by the window already
    else:
        subtask = {"all": "", "parents": " AND NOT subtask", "subtasks": " AND subtask"}[ticket_type]
        tech = "%(tech)s" if view in TECHNICIAN_VIEWS else "''"
        limit = (
            "CASE WHEN %(offset)s < (SELECT coalesce(sum(n), 0) FROM request_counts WHERE scope = %(scope)s "
            f"AND technician_id = {tech} AND view = '{view}'{subtask}) THEN %(limit)s ELSE 0 END"
        )
    return (
        "(SELECT string_agg(r.item, ',' ORDER BY p.updated_at DESC, p.request_id DESC) FROM ("
        f"SELECT request_id, updated_at FROM {table} WHERE {member}{where} "
        f"ORDER BY updated_at DESC, request_id DESC OFFSET %(offset)s LIMIT {limit}"
        ") p JOIN requests_rows r ON r.request_id = p.request_id)"
    )


def _sql(business_unit_id: int | None, page: tuple[str, str] | None) -> str:
    bu = _bu(business_unit_id)
    windows = ", ".join(
        f"(SELECT ARRAY[coalesce(sum(n) FILTER (WHERE NOT subtask), 0), coalesce(sum(n) FILTER (WHERE subtask), 0)] "
        f"FROM request_window_counts WHERE scope = %(scope)s AND view = '{v}' AND bucket >= %({v}_hour)s), "
        f"(SELECT ARRAY[count(*) FILTER (WHERE NOT is_subtask), count(*) FILTER (WHERE is_subtask)] "
        f"FROM requests_rows WHERE {PARTIAL_HOUR_SQL[v]}{bu})"
        for v in WINDOW_VIEWS
    )
    items = _page_sql(page[0], business_unit_id, page[1]) if page else "NULL::bytea"
    return (
        f"SELECT {GENERATION}, (SELECT version FROM request_versions WHERE scope = %(scope)s), c.views, c.subtasks, c.ns, "
        f"{windows}, {items} "
        "FROM (SELECT array_agg(view) AS views, array_agg(subtask) AS subtasks, array_agg(n) AS ns "
        "FROM request_counts WHERE scope = %(scope)s AND technician_id IN ('', %(tech)s)) c"
    )


def _first_whole_hour(start: datetime) -> datetime:
    hour = bucket_of(start)
    return hour if hour == start else hour + WINDOW_BUCKET


async def scope_version(conn: psycopg.AsyncConnection, business_unit_id: int | None) -> tuple[int, int]:
    """``(generation, scope version)``."""
    scope = ALL_SCOPE if business_unit_id is None else str(business_unit_id)
    return await version_of(conn, "requests", "request_versions", "scope", scope)


async def technician_views(
    conn: psycopg.AsyncConnection,
    technician: str,
    business_unit_id: int | None,
    now: datetime,
    page: tuple[str, str, int, int] | None = None,
) -> Page:
    """Counts of every view for ``technician`` within the business unit (or all) at ``now``, and
    with ``page = (view, ticket_type, offset, limit)`` that page's ready items."""
    starts = window_starts(now)
    params: dict[str, object] = {
        "scope": ALL_SCOPE if business_unit_id is None else str(business_unit_id),
        "tech": technician,
        "bu": business_unit_id,
        **starts,
        **{f"{v}_hour": _first_whole_hour(at) for v, at in starts.items()},
    }
    if page is not None:
        params["offset"], params["limit"] = page[2], page[3]
    cur = conn.cursor(binary=True)  # the joined items as PostgreSQL's bytes
    await cur.execute(_sql(business_unit_id, page[:2] if page else None), params)
    gen, version, views, subtasks, ns, *windows, items = await cur.fetchone()  # type: ignore[misc]
    by_view: dict[str, list[int]] = {}
    for view, subtask, n in zip(views or (), subtasks or (), ns or (), strict=True):
        by_view.setdefault(view, [0, 0])[1 if subtask else 0] += n
    for i, view in enumerate(WINDOW_VIEWS):
        hours, partial = windows[2 * i], windows[2 * i + 1]
        by_view[view] = [int(hours[0]) + partial[0], int(hours[1]) + partial[1]]
    counts = Counts({v: (p, s) for v, (p, s) in by_view.items()})
    return Page(gen, version or 0, counts, items or b"")
