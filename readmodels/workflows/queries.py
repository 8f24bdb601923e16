"""Read queries for ``/v1/workflows`` and ``/v1/templates``: plain SQL, ``(conn, params) -> rows``.

A page is one statement: the projection's generation and the list's version (primary-key lookups)
with one range scan of the list's partial index, so they and the rows come from one snapshot; the
page's items come back joined by PostgreSQL (``readside.readmodels.pages``).
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from readside.readmodels.pages import Page, fetch_page, generation, page_sql, version_of

__all__ = ["list_version", "workflow_page"]

GENERATION = generation("workflows")


async def list_version(conn: psycopg.AsyncConnection, key: str) -> tuple[int, int]:
    """``(generation, list version)``."""
    return await version_of(conn, "workflows", "workflow_list_versions", "key", key)


async def workflow_page(
    conn: psycopg.AsyncConnection,
    key: str,
    owner_id: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> tuple[int, int, Page]:
    """``(generation, list version, page)``: the owner's listed workflows, or every listed template
    with ``owner_id`` None, newest ``updated_at`` first, after the keyset position; the page's keys
    are ``(updated_at, workflow_id)``."""
    where = ["listed", "owner_id = %(o)s" if owner_id is not None else "is_template"]
    if after is not None:
        where.append("(updated_at, workflow_id) < (%(ts)s, %(id)s)")
    page = page_sql(f"FROM workflows WHERE {' AND '.join(where)}", ("updated_at", "workflow_id"),
                    "updated_at DESC, workflow_id DESC")
    found = await fetch_page(
        conn,
        f"SELECT {GENERATION}, (SELECT version FROM workflow_list_versions WHERE key = %(key)s), p.* FROM ({page}) AS p",
        {"key": key, "o": owner_id, "ts": after[0] if after else None, "id": after[1] if after else None, "n": limit},
        2,
    )
    assert found is not None  # an aggregate: always one row
    (gen, version), rows = found
    return gen, version or 0, rows
