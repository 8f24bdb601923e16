"""Read queries for ``/v1/providers``: plain SQL, ``(conn, params) -> rows``.

A page is one statement: the listing's version and total (two primary-key lookups) with one
range scan of the partial index of the chosen order, so version, total and rows come from one
snapshot. Sort keys are ascending-only (see ``readside.readmodels.providers.fold.Card``), so the
keyset is a plain row comparison that bounds the index scan.
"""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = ["ORDERS", "listing_version", "provider_page"]

# sort -> the key columns with their SQL types, in index order; ties by provider_id ascending.
ORDERS: dict[str, tuple[tuple[str, str], ...]] = {
    "most_booked": (("booked_key", "int8"),),
    "top_rated": (("rated_key", "numeric"), ("rated_count_key", "int8")),
    "newest": (("newest_key", "int8"),),
}


async def listing_version(conn: psycopg.AsyncConnection, key: str) -> int:
    cur = await conn.execute("SELECT version FROM listing_versions WHERE key = %s", (key,))
    row = await cur.fetchone()
    return row[0] if row else 0


async def provider_page(
    conn: psycopg.AsyncConnection,
    key: str,
    category_key: str | None,
    sort: str,
    after: tuple[Any, ...] | None,
    limit: int,
) -> tuple[int, int, list[tuple[bytes, tuple[Any, ...], str]]]:
    """``(listing version, listed total, rows)``; each row is ``(item, sort keys, provider_id)``."""
    cols = ORDERS[sort]
    names = ", ".join(c for c, _ in cols)
    where = ["listed"]
    params: dict[str, Any] = {"key": key, "cat": category_key, "n": limit}
    if category_key is not None:
        where.append("category_key = %(cat)s")
    if after is not None:
        *values, last_id = after
        marks = ", ".join(f"%(k{i})s::{t}" for i, (_, t) in enumerate(cols))
        where.append(f"({names}, provider_id) > ({marks}, %(id)s)")
        params.update({f"k{i}": v for i, v in enumerate(values)}, id=last_id)
    cur = await conn.execute(
        f"SELECT v.version, c.listed, p.item, {', '.join(f'p.{c}' for c, _ in cols)}, p.provider_id "
        "FROM (SELECT 1) AS one "
        "LEFT JOIN listing_versions v ON v.key = %(key)s "
        "LEFT JOIN provider_counts c ON c.key = %(key)s "
        f"LEFT JOIN LATERAL (SELECT item, {names}, provider_id FROM providers WHERE {' AND '.join(where)} "
        f"ORDER BY {names}, provider_id LIMIT %(n)s) p ON true "
        f"ORDER BY {', '.join(f'p.{c}' for c, _ in cols)}, p.provider_id",
        params,
    )
    rows = await cur.fetchall()
    version, total = rows[0][0] or 0, rows[0][1] or 0
    n = len(cols)
    return version, total, [(bytes(r[2]), tuple(r[3 : 3 + n]), r[3 + n]) for r in rows if r[2] is not None]
