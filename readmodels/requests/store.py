"""Support-desk requests read model, the storage side: DDL and the set-based ``apply`` of a batch.

Tables (ids ``COLLATE "C"``):
- ``requests_rows``      one row per request: its fold state (``fold.dump_state`` bytes), the
                         ready JSON ``item`` of the technician views, and the flat columns the
                         views filter and order on. ``listed`` is false until ``request.created``.
                         Partial indexes, one per view whose membership does not move with the
                         clock (and one more per view led by ``business_unit_id``), ordered
                         ``(updated_at DESC, request_id DESC)``: a page is one range of one index.
                         The time windows' pages use the ``listed`` index on ``updated_at`` (every
                         window bounds ``updated_at`` from below); the ``solved_at`` and
                         ``created_at`` indexes count the partial hour at a window's start.
- ``request_assignees``  ``(request, technician)`` with copies of the columns ``my_unsolved`` and
                         ``all_your_requests`` need, indexed per technician.
- ``request_counts``     maintained counters ``(scope, technician, view, subtask) -> n`` for the
                         views kept as counters (``views.COUNTED_VIEWS``); ``scope`` is ``*`` or
                         a business unit id, ``technician`` is ``''`` for the shared views. Kept by
                         deltas (old membership vs new) with commutative ``n = n + delta`` upserts
                         in key order, so two projector instances never lose an update or deadlock.
- ``request_window_counts``  counters per hour for the time windows ``(scope, window, hour,
                         subtask) -> n``, by the hour of ``updated_at`` / ``solved_at`` (solved rows) /
                         ``created_at``: a window's count is a sum over at most its hours plus an
                         index-only range count of the partial hour at its start. Kept by deltas
                         like ``request_counts``. Buckets older than the longest window (7 days) are
                         never read again; they may be deleted at any time.
- ``request_versions``   per scope (``*`` or a business unit), bumped when a listed row of that
                         scope changes; the API's ETags and the cache keys ``requests:<scope>``.

``apply`` locks the touched rows in id order, loads them with one query, folds in memory with
``fold.fold_into``, and writes each table back with one statement. Redelivered or no-op events
leave the state bytes unchanged and write nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import psycopg

from readside.readmodels.base import Projection, TableCheck
from readside.readmodels.requests import scopes
from readside.readmodels.requests.fold import RequestRow, RequestState, dump_state, fold_into, load_state, render
from readside.readmodels.requests.views import ALL_SCOPE, SHARED_VIEW_SQL, counter_keys, counter_scopes, window_keys
from readside.schemas import Event
from readside.shared.jsonbytes import dumps

__all__ = ["DDL", "PROJECTION", "apply"]


def _view_indexes() -> str:
    out = []
    for view, where in SHARED_VIEW_SQL.items():
        out.append(
            f"CREATE INDEX IF NOT EXISTS requests_v_{view} ON requests_rows "
            f"(updated_at DESC, request_id DESC) INCLUDE (is_subtask) WHERE {where};"
        )
        out.append(
            f"CREATE INDEX IF NOT EXISTS requests_vb_{view} ON requests_rows "
            f"(business_unit_id, updated_at DESC, request_id DESC) INCLUDE (is_subtask) WHERE {where};"
        )
    return "\n".join(out)


DDL = f"""
CREATE TABLE IF NOT EXISTS requests_rows (
    request_id text COLLATE "C" PRIMARY KEY,
    state bytea NOT NULL,
    listed bool NOT NULL,
    status text, priority text, business_unit_id int8,
    is_subtask bool NOT NULL, unsolved bool NOT NULL, unassigned bool NOT NULL, urgent_high bool NOT NULL,
    created_at timestamptz, updated_at timestamptz, solved_at timestamptz,
    item bytea
);
CREATE INDEX IF NOT EXISTS requests_listed ON requests_rows
    (updated_at DESC, request_id DESC) INCLUDE (is_subtask) WHERE listed;
CREATE INDEX IF NOT EXISTS requests_listed_bu ON requests_rows
    (business_unit_id, updated_at DESC, request_id DESC) INCLUDE (is_subtask) WHERE listed;
CREATE INDEX IF NOT EXISTS requests_solved ON requests_rows
    (solved_at) INCLUDE (is_subtask, updated_at) WHERE listed AND status = 'solved';
CREATE INDEX IF NOT EXISTS requests_solved_bu ON requests_rows
    (business_unit_id, solved_at) INCLUDE (is_subtask, updated_at) WHERE listed AND status = 'solved';
CREATE INDEX IF NOT EXISTS requests_created ON requests_rows
    (created_at) INCLUDE (is_subtask, updated_at) WHERE listed;
CREATE INDEX IF NOT EXISTS requests_created_bu ON requests_rows
    (business_unit_id, created_at) INCLUDE (is_subtask, updated_at) WHERE listed;
{_view_indexes()}
CREATE TABLE IF NOT EXISTS request_assignees (
    request_id text COLLATE "C" NOT NULL,
    technician_id text COLLATE "C" NOT NULL,
    business_unit_id int8 NOT NULL,
    is_subtask bool NOT NULL,
    unsolved bool NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (request_id, technician_id)
);
CREATE INDEX IF NOT EXISTS request_assignees_all ON request_assignees
    (technician_id, updated_at DESC, request_id DESC) INCLUDE (is_subtask);
CREATE INDEX IF NOT EXISTS request_assignees_all_bu ON request_assignees
    (technician_id, business_unit_id, updated_at DESC, request_id DESC) INCLUDE (is_subtask);
CREATE INDEX IF NOT EXISTS request_assignees_unsolved ON request_assignees
    (technician_id, updated_at DESC, request_id DESC) INCLUDE (is_subtask) WHERE unsolved;
CREATE INDEX IF NOT EXISTS request_assignees_unsolved_bu ON request_assignees
    (technician_id, business_unit_id, updated_at DESC, request_id DESC) INCLUDE (is_subtask) WHERE unsolved;
CREATE TABLE IF NOT EXISTS request_counts (
    scope text COLLATE "C" NOT NULL,
    technician_id text COLLATE "C" NOT NULL,
    view text COLLATE "C" NOT NULL,
    subtask bool NOT NULL,
    n int8 NOT NULL,
    PRIMARY KEY (scope, technician_id, view, subtask)
);
CREATE TABLE IF NOT EXISTS request_window_counts (
    scope text COLLATE "C" NOT NULL,
    view text COLLATE "C" NOT NULL,
    bucket timestamptz NOT NULL,
    subtask bool NOT NULL,
    n int8 NOT NULL,
    PRIMARY KEY (scope, view, bucket, subtask)
);
CREATE TABLE IF NOT EXISTS request_versions (
    scope text COLLATE "C" PRIMARY KEY,
    version int8 NOT NULL
);
"""


async def _load(conn: psycopg.AsyncConnection, ids: list[str]) -> dict[str, tuple[bytes, bytes | None]]:
    cur = await conn.execute(
        "SELECT request_id, state, item FROM requests_rows WHERE request_id = ANY(%b::text[]) "
        "ORDER BY request_id FOR UPDATE",
        (ids,),
    )
    return {rid: (bytes(state), bytes(item) if item is not None else None) for rid, state, item in await cur.fetchall()}


async def apply(conn: psycopg.AsyncConnection, events: Sequence[Event]) -> set[str]:
    ids = sorted({e.payload.request_id for e in events})  # type: ignore[attr-defined]
    stored = await _load(conn, ids)
    old: dict[str, RequestRow] = {}
    states: dict[str, RequestState] = {}
    for rid in ids:
        if rid in stored:
            state = load_state(rid, stored[rid][0])
            old[rid] = render(state)
        else:
            state = RequestState(rid)
            old[rid] = RequestRow(rid, False)
        states[rid] = state
    for event in events:
        fold_into(states[event.payload.request_id], event)  # type: ignore[attr-defined]

    written: list[tuple[RequestRow, bytes, bytes | None]] = []
    visible: list[tuple[RequestRow, RequestRow]] = []  # (old, new) whose item changed
    for rid in ids:
        blob = dump_state(states[rid])
        if rid in stored and stored[rid][0] == blob:
            continue  # redelivered or no-op: nothing changed
        row = render(states[rid])
        item = dumps(row.item) if row.item is not None else None
        written.append((row, blob, item))
        if item != (stored[rid][1] if rid in stored else None):
            visible.append((old[rid], row))
    if not written:
        return set()
    await _write_rows(conn, written)
    if not visible:
        return set()
    await _write_assignees(conn, visible)
    await _write_counts(conn, visible)
    return await _bump_versions(conn, visible)


async def _write_rows(conn: psycopg.AsyncConnection, written: list[tuple[RequestRow, bytes, bytes | None]]) -> None:
    rows = [r for r, _, _ in written]
    await conn.execute(
        "INSERT INTO requests_rows (request_id, state, listed, status, priority, business_unit_id, is_subtask, "
        "unsolved, unassigned, urgent_high, created_at, updated_at, solved_at, item) "
        "SELECT * FROM unnest(%b::text[], %b::bytea[], %b::bool[], %b::text[], %b::text[], %b::int8[], %b::bool[], "
        "%b::bool[], %b::bool[], %b::bool[], %b::timestamptz[], %b::timestamptz[], %b::timestamptz[], %b::bytea[]) "
        "ON CONFLICT (request_id) DO UPDATE SET state = excluded.state, listed = excluded.listed, "
        "status = excluded.status, priority = excluded.priority, business_unit_id = excluded.business_unit_id, "
        "is_subtask = excluded.is_subtask, unsolved = excluded.unsolved, unassigned = excluded.unassigned, "
        "urgent_high = excluded.urgent_high, created_at = excluded.created_at, updated_at = excluded.updated_at, "
        "solved_at = excluded.solved_at, item = excluded.item",
        (
            [r.request_id for r in rows],
            [b for _, b, _ in written],
            [r.listed for r in rows],
            [r.status for r in rows],
            [r.priority for r in rows],
            [r.business_unit_id for r in rows],
            [r.is_subtask for r in rows],
            [r.unsolved for r in rows],
            [r.unassigned for r in rows],
            [r.urgent_high for r in rows],
            [r.created_at for r in rows],
            [r.updated_at for r in rows],
            [r.solved_at for r in rows],
            [i for _, _, i in written],
        ),
    )


async def _write_assignees(conn: psycopg.AsyncConnection, visible: list[tuple[RequestRow, RequestRow]]) -> None:
    """Replace the touched requests' assignee rows: drop the gone ones, upsert the current ones."""
    touched = sorted({new.request_id for old, new in visible if old.assignees or new.assignees})
    if not touched:
        return
    keep = sorted((new.request_id, t, new) for _, new in visible if new.listed for t in new.assignees)
    await conn.execute(
        "WITH gone AS (DELETE FROM request_assignees a WHERE a.request_id = ANY(%b::text[]) "
        "AND (a.request_id, a.technician_id) NOT IN (SELECT * FROM unnest(%b::text[], %b::text[]))) "
        "INSERT INTO request_assignees (request_id, technician_id, business_unit_id, is_subtask, unsolved, updated_at) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::int8[], %b::bool[], %b::bool[], %b::timestamptz[]) "
        "ON CONFLICT (request_id, technician_id) DO UPDATE SET business_unit_id = excluded.business_unit_id, "
        "is_subtask = excluded.is_subtask, unsolved = excluded.unsolved, updated_at = excluded.updated_at",
        (
            touched,
            [r for r, _, _ in keep],
            [t for _, t, _ in keep],
            [r for r, _, _ in keep],
            [t for _, t, _ in keep],
            [row.business_unit_id for _, _, row in keep],
            [row.is_subtask for _, _, row in keep],
            [row.unsolved for _, _, row in keep],
            [row.updated_at for _, _, row in keep],
        ),
    )


def _deltas(visible: list[tuple[RequestRow, RequestRow]], keys_of) -> tuple[list, Counter]:  # noqa: ANN001
    deltas: Counter = Counter()
    for old, new in visible:
        before, after = keys_of(old), keys_of(new)
        deltas.update(after - before)
        deltas.subtract(before - after)
    return sorted(k for k, d in deltas.items() if d), deltas


async def _write_counts(conn: psycopg.AsyncConnection, visible: list[tuple[RequestRow, RequestRow]]) -> None:
    """Counter deltas, old membership vs new, as commutative upserts in key order."""
    keys, deltas = _deltas(visible, window_keys)
    if keys:
        await conn.execute(
            "INSERT INTO request_window_counts (scope, view, bucket, subtask, n) "
            "SELECT * FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::bool[], %b::int8[]) "
            "ON CONFLICT (scope, view, bucket, subtask) DO UPDATE SET n = request_window_counts.n + excluded.n",
            ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [k[3] for k in keys], [deltas[k] for k in keys]),
        )
    keys, deltas = _deltas(visible, counter_keys)
    if not keys:
        return
    await conn.execute(
        "INSERT INTO request_counts (scope, technician_id, view, subtask, n) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::bool[], %b::int8[]) "
        "ON CONFLICT (scope, technician_id, view, subtask) DO UPDATE SET n = request_counts.n + excluded.n",
        (
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [k[3] for k in keys],
            [deltas[k] for k in keys],
        ),
    )


async def _bump_versions(conn: psycopg.AsyncConnection, visible: list[tuple[RequestRow, RequestRow]]) -> set[str]:
    touched = sorted({s for old, new in visible for s in (*counter_scopes(old), *counter_scopes(new))} | {ALL_SCOPE})
    await conn.execute(
        "INSERT INTO request_versions (scope, version) SELECT unnest(%b::text[]), 1 "
        "ON CONFLICT (scope) DO UPDATE SET version = request_versions.version + 1",
        (touched,),
    )
    return {scopes.requests(s) for s in touched}


PROJECTION = Projection(
    name="requests",
    version=1,
    topics=("requests.events",),
    event_types=frozenset(
        {
            "request.created",
            "request.updated",
            "request.assigned",
            "request.taken",
            "request.message_created",
            "request.message_read",
        }
    ),
    ddl=DDL,
    apply=apply,
    tables=("requests_rows", "request_assignees", "request_counts", "request_window_counts", "request_versions"),
    checks=(
        TableCheck("request_counts", where="n <> 0"),
        TableCheck("request_window_counts", where="n <> 0"),
        TableCheck("request_versions", skip=True),
    ),
    scopes=scopes.SCOPES,
)
