"""Workflow summary read model, the storage side: DDL and the set-based ``apply`` of one batch.

Tables (ids ``COLLATE "C"``):
- ``workflows``               one row per workflow (a stub until ``workflow.created``): the
                              creation facts, the latest version with its counts, the latest
                              ``saved_at``, the sticky ``deleted`` flag, and the list entry —
                              ``listed``, ``updated_at`` and the item as ready JSON bytes. Two
                              partial indexes (``WHERE listed``): per owner, and templates.
- ``workflow_list_versions``  per list key, bumped whenever a listed entry of that list changes
                              (ETags): ``workflows:<owner_id>`` and ``templates`` (``scopes``).

Nodes and edges are never stored: a saved version leaves only its counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from readside.readmodels.base import Projection, TableCheck
from readside.readmodels.workflows import scopes
from readside.readmodels.workflows.fold import Created, Latest, WorkflowState, fold_into, render
from readside.readmodels.workflows.scopes import TEMPLATES_KEY, owner_key
from readside.schemas import Event
from readside.shared.jsonbytes import dumps

__all__ = ["DDL", "PROJECTION", "apply"]


DDL = """
CREATE TABLE IF NOT EXISTS workflows (
    workflow_id text COLLATE "C" PRIMARY KEY,
    owner_id text COLLATE "C", name text, is_template bool, created_at timestamptz,
    latest_version int8, latest_saved_at timestamptz, node_count int8, edge_count int8,
    last_saved_at timestamptz,
    deleted bool NOT NULL DEFAULT false,
    listed bool NOT NULL DEFAULT false,
    updated_at timestamptz,
    item bytea
);
CREATE INDEX IF NOT EXISTS workflows_by_owner
    ON workflows (owner_id, updated_at DESC, workflow_id DESC) WHERE listed;
CREATE INDEX IF NOT EXISTS workflows_templates
    ON workflows (updated_at DESC, workflow_id DESC) WHERE listed AND is_template;
CREATE TABLE IF NOT EXISTS workflow_list_versions (
    key text COLLATE "C" PRIMARY KEY,
    version int8 NOT NULL DEFAULT 0
);
"""

_COLS = (
    "owner_id", "name", "is_template", "created_at",
    "latest_version", "latest_saved_at", "node_count", "edge_count",
    "last_saved_at", "deleted", "listed", "updated_at", "item",
)
_TYPES = (
    "text", "text", "bool", "timestamptz",
    "int8", "timestamptz", "int8", "int8",
    "timestamptz", "bool", "bool", "timestamptz", "bytea",
)
_LISTED_AT = 10  # index of `listed` in a Row; the list entry is Row[_LISTED_AT:] plus owner and template flag
Row = tuple[Any, ...]


def _row(state: WorkflowState) -> Row:
    c, v = state.created, state.latest
    entry = render(state)
    return (
        c.owner_id if c else None,
        c.name if c else None,
        c.is_template if c else None,
        c.created_at if c else None,
        v.version_number if v else None,
        v.saved_at if v else None,
        v.node_count if v else None,
        v.edge_count if v else None,
        state.last_saved_at,
        state.deleted,
        entry.listed if entry else False,
        entry.updated_at if entry else None,
        dumps(entry.item) if entry else None,
    )


async def _load(conn: psycopg.AsyncConnection, wids: list[str]) -> tuple[dict[str, WorkflowState], dict[str, Row]]:
    cur = await conn.execute(
        f"SELECT workflow_id, {', '.join(_COLS)} FROM workflows "
        "WHERE workflow_id = ANY(%b::text[]) ORDER BY workflow_id FOR UPDATE",
        (wids,),
    )
    states = {wid: WorkflowState(wid) for wid in wids}
    old: dict[str, Row] = {}
    for wid, *row in await cur.fetchall():
        if row[-1] is not None:
            row[-1] = bytes(row[-1])
        old[wid] = tuple(row)
        owner, name, template, created_at, number, saved_at, nodes, edges, last_saved, deleted = row[:10]
        states[wid] = WorkflowState(
            wid,
            Created(created_at, owner, name, template) if owner is not None else None,
            Latest(number, saved_at, nodes, edges) if number is not None else None,
            last_saved,
            deleted,
        )
    return states, old


async def apply(conn: psycopg.AsyncConnection, events: Sequence[Event]) -> set[str]:
    wids = sorted({e.payload.workflow_id for e in events})  # type: ignore[attr-defined]
    states, old = await _load(conn, wids)
    for event in events:
        fold_into(states[event.payload.workflow_id], event)  # type: ignore[attr-defined]
    rows = {wid: row for wid in wids if (row := _row(states[wid])) != old.get(wid)}
    if not rows:
        return set()
    keys = sorted(rows)
    await conn.execute(
        f"INSERT INTO workflows (workflow_id, {', '.join(_COLS)}) "
        f"SELECT * FROM unnest(%b::text[], {', '.join(f'%b::{t}[]' for t in _TYPES)}) "
        f"ON CONFLICT (workflow_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _COLS)}",
        (keys, *[[rows[k][i] for k in keys] for i in range(len(_COLS))]),
    )
    bumped: set[str] = set()
    for wid, after in rows.items():
        before = old.get(wid)
        for side in (before, after):
            if side is None or not side[_LISTED_AT]:
                continue
            if before is not None and _entry(before) == _entry(after):
                continue  # stored facts moved, the listed entry did not
            bumped.add(owner_key(side[0]))
            if side[2]:
                bumped.add(TEMPLATES_KEY)
    if bumped:
        await conn.execute(
            "INSERT INTO workflow_list_versions (key, version) SELECT unnest(%b::text[]), 1 "
            "ON CONFLICT (key) DO UPDATE SET version = workflow_list_versions.version + 1",
            (sorted(bumped),),
        )
    return bumped


def _entry(row: Row) -> tuple:
    """What the lists show of a row: who lists it, whether, where it sorts, and the item."""
    return row[0], row[2], row[_LISTED_AT:]


PROJECTION = Projection(
    name="workflows",
    version=1,
    topics=("workflows.events",),
    event_types=frozenset({"workflow.created", "workflow.version_saved", "workflow.deleted"}),
    ddl=DDL,
    apply=apply,
    tables=("workflows", "workflow_list_versions"),
    checks=(TableCheck("workflow_list_versions", skip=True),),
    scopes=scopes.SCOPES,
)
