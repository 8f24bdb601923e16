"""A keyset page as one row: PostgreSQL joins the page's ready items, Python never sees a row.

``page_sql(source, keys, order)`` is a SELECT of one row over the first ``%(n)s + 1`` rows of
``source`` (``FROM ... WHERE ...``, rows with ``item`` bytea and the key columns ``keys``) in
``order`` (which ``keys`` decide; the index order, so the scan stops after them):

- ``body``: the first ``%(n)s`` items joined with ``,`` in that order (NULL if there are none),
  ready to go between a list's brackets;
- the keys of the ``%(n)s``-th row (the next page's keyset position), each NULL if there are fewer;
- ``more``: whether a ``%(n)s + 1``-th row exists (a next page).

With ``joined=False``, ``body`` is the array of those items instead (for a caller that must
reshape each). Bytes in, bytes out: a cursor with ``binary=True`` gets ``body`` as the bytes
PostgreSQL joined (in text, bytea would come hex-encoded and be decoded again).

``generation(name)`` is the column every read of the API's PostgreSQL path carries: the
projection's generation (bumped by a rebuild's cutover), read by the same statement as the version
and the rows, so an ETag names the generation of the tables its body came from.
"""

from __future__ import annotations

import psycopg

__all__ = ["ItemsPage", "Page", "fetch_page", "generation", "page_sql", "version_of"]

Page = tuple[bytes, tuple, bool]  # (joined items, keys of the last item, whether there is more)
ItemsPage = tuple[list[bytes], tuple, bool]  # the same with ``joined=False``


def generation(name: str) -> str:
    """The projection ``name``'s generation as a scalar subquery (0 if it has no row)."""
    assert name.isidentifier(), name
    return f"coalesce((SELECT generation FROM projections WHERE name = '{name}'), 0)"


async def version_of(conn: psycopg.AsyncConnection, projection: str, table: str, column: str, key: str) -> tuple[int, int]:
    """``(generation, version)``: ``projection``'s generation and the ``version`` of the row of
    ``table`` whose ``column`` is ``key`` (0 without one), in one statement — what a 304 costs.
    Every read model keeps its lists' versions in such a table (``viewer_versions``,
    ``listing_versions``, ``request_versions``, ``workflow_list_versions``, a thread's row)."""
    assert table.isidentifier() and column.isidentifier(), (table, column)
    cur = await conn.execute(
        f"SELECT {generation(projection)}, (SELECT version FROM {table} WHERE {column} = %s)", (key,)
    )
    row = await cur.fetchone()
    assert row is not None  # a SELECT without FROM always gives one row
    return row[0], row[1] or 0


# The items are aggregated in the order the subquery gives them: a plain aggregate over a subquery
# sorted by ``ORDER BY ... LIMIT`` (an index scan in that order, no join) reads its rows in that
# order, as PostgreSQL's manual says of aggregates fed from a sorted subquery. An ``ORDER BY i``
# inside the aggregate would sort the ~100 items (~400 bytes each) again: 285 -> 195 us of
# server CPU per inbox page of 100 (tests/integration/test_pages.py checks the order at every size).
def page_sql(source: str, keys: tuple[str, ...], order: str, joined: bool = True) -> str:
    last = ", ".join(f"max({k}) FILTER (WHERE i = %(n)s)" for k in keys)  # one row: its value
    items = "string_agg(item, ',')" if joined else "array_agg(item)"
    return (
        f"SELECT {items} FILTER (WHERE i <= %(n)s), {last}, count(*) > %(n)s "
        f"FROM (SELECT item, {', '.join(keys)}, row_number() OVER (ORDER BY {order}) AS i {source} "
        f"ORDER BY {order} LIMIT %(n)s + 1) page"
    )


async def fetch_page(conn: psycopg.AsyncConnection, query: str, params: dict, lead: int) -> tuple[tuple, Page] | None:
    """Run ``query`` (``lead`` columns, then ``page_sql``'s) in binary; ``(lead columns, page)``
    (an ``ItemsPage`` for ``joined=False``), or None if it returns no row (an access check that
    failed)."""
    cur = conn.cursor(binary=True)
    await cur.execute(query, params)
    row = await cur.fetchone()
    if row is None:
        return None
    body, *keys, more = row[lead:]
    if isinstance(body, list):
        return tuple(row[:lead]), (body, tuple(keys), bool(more))  # type: ignore[return-value]
    return tuple(row[:lead]), (body or b"", tuple(keys), bool(more))
