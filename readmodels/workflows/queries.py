"""Read queries for ``/v1/workflows`` and ``/v1/templates``: plain SQL, ``(conn, params) -> rows``.

A page is one statement: the list's version (a primary-key lookup) with one range scan of the
list's partial index, so the version and the rows come from one snapshot.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

__all__ = ["list_version", "workflow_page"]


async def list_version(conn: psycopg.AsyncConnection, key: str) -> int:
    cur = await conn.execute("SELECT version FROM workflow_list_versions WHERE key = %s", (key,))
    row = await cur.fetchone()
    return row[0] if row else 0


async def workflow_page(
    conn: psycopg.AsyncConnection,
    key: str,
    owner_id: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> tuple[int, list[tuple[bytes, datetime, str]]]:
    """``(list version, rows)``: the owner's listed workflows, or every listed template with
    ``owner_id`` None, newest ``updated_at`` first, after the keyset position."""
    where = ["listed", "owner_id = %(o)s" if owner_id is not None else "is_template"]
    if after is not None:
        where.append("(updated_at, workflow_id) < (%(ts)s, %(id)s)")
    cur = await conn.execute(
        "SELECT v.version, w.item, w.updated_at, w.workflow_id "
        "FROM (SELECT 1) AS one "
        "LEFT JOIN workflow_list_versions v ON v.key = %(key)s "
        f"LEFT JOIN LATERAL (SELECT item, updated_at, workflow_id FROM workflows WHERE {' AND '.join(where)} "
        "ORDER BY updated_at DESC, workflow_id DESC LIMIT %(n)s) w ON true "
        "ORDER BY w.updated_at DESC, w.workflow_id DESC",
        {"key": key, "o": owner_id, "ts": after[0] if after else None, "id": after[1] if after else None, "n": limit},
    )
    rows = await cur.fetchall()
    return rows[0][0] or 0, [(bytes(item), ts, wid) for _, item, ts, wid in rows if item is not None]
