"""A keyset page as one row: PostgreSQL joins the page's ready items, Python never sees a row.

``page_sql(source, keys, order)`` is a SELECT of one row over the first ``%(n)s + 1`` rows of
``source`` (``FROM ... WHERE ...``, rows with ``item`` bytea and the key columns ``keys``) in
``order`` (which ``keys`` decide; the index order, so the scan stops after them):

- ``body``: the first ``%(n)s`` items joined with ``,`` in that order (NULL if there are none),
  ready to go between a list's brackets;
- the keys of the ``%(n)s``-th row (the next page's keyset position), each NULL if there are fewer;
- ``more``: whether a ``%(n)s + 1``-th row exists (a next page).

Bytes in, bytes out: a cursor with ``binary=True`` gets ``body`` as the bytes PostgreSQL joined.
"""

from __future__ import annotations

import psycopg

__all__ = ["Page", "fetch_page", "page_sql"]

Page = tuple[bytes, tuple, bool]  # (joined items, keys of the last item, whether there is more)


def page_sql(source: str, keys: tuple[str, ...], order: str) -> str:
    last = ", ".join(f"(array_agg({k}) FILTER (WHERE i = %(n)s))[1]" for k in keys)
    return (
        f"SELECT string_agg(item, ',' ORDER BY i) FILTER (WHERE i <= %(n)s), {last}, count(*) > %(n)s "
        f"FROM (SELECT item, {', '.join(keys)}, row_number() OVER (ORDER BY {order}) AS i {source} "
        f"ORDER BY {order} LIMIT %(n)s + 1) page"
    )


async def fetch_page(conn: psycopg.AsyncConnection, query: str, params: dict, lead: int) -> tuple[tuple, Page] | None:
    """Run ``query`` (``lead`` columns, then ``page_sql``'s) in binary; ``(lead columns, page)``,
    or None if it returns no row (an access check that failed)."""
    cur = conn.cursor(binary=True)
    await cur.execute(query, params)
    row = await cur.fetchone()
    if row is None:
        return None
    body, *keys, more = row[lead:]
    return tuple(row[:lead]), (body or b"", tuple(keys), bool(more))
