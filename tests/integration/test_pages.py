"""``readside.readmodels.pages``: a keyset page joined by PostgreSQL is the page a client expects —
the first ``n`` items in the keyset order, the ``n``-th item's keys, and whether there is more —
whether the rows come from an index in that order or from a sort, at every page size and
position. (The aggregate takes its items in the subquery's order, without sorting them again.)"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from readside.readmodels.pages import fetch_page, page_sql

ROWS = 3000
BASE = datetime(2026, 1, 1, tzinfo=UTC)


def _rows() -> list[tuple[str, datetime, str, bytes]]:
    rng = random.Random(7)
    out = []
    for i in range(ROWS):
        ts = BASE + timedelta(seconds=rng.randrange(400))  # many ties: the second key decides
        tid = f"t-{rng.randrange(10**9):09d}-{i}"
        user = "u-1" if i % 4 else "u-2"
        out.append((user, ts, tid, b'{"thread_id":"%s","pad":"%s"}' % (tid.encode(), b"x" * rng.randrange(300))))
    rng.shuffle(out)  # the heap in no particular order
    return out


@pytest.fixture
def table(db_url: str) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for name, index in (("pages_indexed", True), ("pages_sorted", False)):
            conn.execute(f"CREATE TABLE {name} (user_id text COLLATE \"C\", last_ts timestamptz, "
                         f"thread_id text COLLATE \"C\", item bytea)")
            with conn.cursor().copy(f"COPY {name} FROM STDIN") as copy:
                for row in _rows():
                    copy.write_row(row)
            if index:
                conn.execute(f"CREATE INDEX ON {name} (user_id, last_ts DESC, thread_id DESC) INCLUDE (item)")
            conn.execute(f"ANALYZE {name}")
    return db_url


def _expected(user: str, after: tuple[datetime, str] | None, n: int) -> tuple[list[bytes], tuple, bool]:
    rows = sorted((r for r in _rows() if r[0] == user), key=lambda r: (r[1], r[2]), reverse=True)
    if after is not None:
        rows = [r for r in rows if (r[1], r[2]) < after]
    page = rows[:n]
    keys = (page[-1][1], page[-1][2]) if len(page) == n else (None, None)
    return [r[3] for r in page], keys, len(rows) > n


@pytest.mark.parametrize("name", ["pages_indexed", "pages_sorted"])
def test_a_page_is_the_first_items_in_keyset_order_at_every_size_and_position(table: str, name: str) -> None:
    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(table, autocommit=True) as conn:
            cur = await conn.execute(f"EXPLAIN SELECT item FROM {name} WHERE user_id = 'u-1' "
                                     "ORDER BY last_ts DESC, thread_id DESC LIMIT 101")
            plan = " ".join(r[0] for r in await cur.fetchall())
            assert ("Index" in plan) == (name == "pages_indexed"), plan  # both ways rows can come
            for user in ("u-1", "u-2"):
                for joined in (True, False):
                    after: tuple[datetime, str] | None = None
                    for n in (1, 7, 100, 200, 749, 750, 751, ROWS):
                        where = "user_id = %(u)s" + (" AND (last_ts, thread_id) < (%(ts)s, %(tid)s)" if after else "")
                        query = page_sql(f"FROM {name} WHERE {where}", ("last_ts", "thread_id"),
                                         "last_ts DESC, thread_id DESC", joined)
                        params = {"u": user, "n": n, "ts": after[0] if after else None, "tid": after[1] if after else None}
                        found = await fetch_page(conn, f"SELECT 1, p.* FROM ({query}) AS p", params, 1)
                        assert found is not None
                        _, (body, keys, more) = found
                        items, want_keys, want_more = _expected(user, after, n)
                        got = body if joined else b",".join(body)
                        assert got == b",".join(items), (user, n, after)
                        assert (keys, more) == (want_keys, want_more), (user, n, after)
                        if n == 100 and more:
                            after = keys  # the following sizes read on from this position

    asyncio.run(go())
