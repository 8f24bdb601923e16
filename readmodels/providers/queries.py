"""Read queries for ``/v1/providers``: plain SQL, ``(conn, params) -> rows``.

A page is one statement: the projection's generation, the listing's version and total
(primary-key lookups) with one range scan of the partial index of the chosen order, so they and
the rows come from one snapshot; the page's items come back joined by PostgreSQL
(``readside.readmodels.pages``). Sort keys are ascending-only (see ``readside.readmodels.providers.fold.Card``), so the
keyset is a plain row comparison that bounds the index scan.
"""

from __future__ import annotations

from typing import Any

import psycopg

from readside.readmodels.pages import Page, fetch_page, generation, page_sql, version_of

__all__ = ["ORDERS", "listing_version", "provider_page"]

# sort -> the key columns with their SQL types, in index order; ties by provider_id ascending.
ORDERS: dict[str, tuple[tuple[str, str], ...]] = {
    "most_booked": (("booked_key", "int8"),),
    "top_rated": (("rated_key", "numeric"), ("rated_count_key", "int8")),
    "newest": (("newest_key", "int8"),),
}


GENERATION = generation("providers")


async def listing_version(conn: psycopg.AsyncConnection, key: str) -> tuple[int, int]:
    """``(generation, listing version)``."""
    return await version_of(conn, "providers", "listing_versions", "key", key)


async def provider_page(
    conn: psycopg.AsyncConnection,
    key: str,
    category_key: str | None,
    sort: str,
    after: tuple[Any, ...] | None,
    limit: int,
    joined: bool = True,
) -> tuple[int, int, int, Page]:
    """``(generation, listing version, listed total, page)``; the page's keys are the sort keys
    then ``provider_id``; with ``joined=False`` its items are a list (``pages.ItemsPage``)."""
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
    page = page_sql(f"FROM providers WHERE {' AND '.join(where)}", (*(c for c, _ in cols), "provider_id"),
                    f"{names}, provider_id", joined)
    found = await fetch_page(
        conn,
        f"SELECT {GENERATION}, (SELECT version FROM listing_versions WHERE key = %(key)s), "
        f"(SELECT listed FROM provider_counts WHERE key = %(key)s), p.* FROM ({page}) AS p",
        params,
        3,
    )
    assert found is not None  # an aggregate: always one row
    (gen, version, total), rows = found
    return gen, version or 0, total or 0, rows
