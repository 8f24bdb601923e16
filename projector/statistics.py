"""The planner's statistics of the projector's tables, kept current by the projector itself.

PostgreSQL plans each statement from its tables' statistics, which ``ANALYZE`` gathers and
autovacuum refreshes once a table has changed by ``autovacuum_analyze_threshold +
autovacuum_analyze_scale_factor x rows``. A table the projector fills fast (a new deployment, a
replay, a projection growing by the million) outruns that: autovacuum looks once a minute, may be
busy elsewhere, and is off on some servers. A table never analyzed is planned as if it were
small and its keys few: a batch's ``thread_id = ANY(...)`` lookup became a sequential scan of the
whole table, every batch, so the batch's cost grew with the table (measured: the thread mix fell
from ~8.7k to ~3.4k events/s over 1M events, with autovacuum off; one ``ANALYZE`` brought it back).

So every ``READSIDE_ANALYZE_EVERY`` seconds (0: never) each runner asks ``pg_stat_user_tables``
which of its tables changed by more than autovacuum's own threshold (the server's settings)
since their last analyze, by anyone, and analyzes those. Where autovacuum keeps up, it finds
nothing to do. ``ANALYZE`` reads a sample (at most 30,000 rows per table at the default
statistics target) and takes a lock that conflicts with no write; two instances that meet on
one table do not wait on each other: the second skips it.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

__all__ = ["GROWN", "analyze_grown"]

# The tables among %s (names, schema-qualified or on the search path) whose changes since their
# last analyze are past autovacuum's threshold; a table never analyzed has reltuples -1.
GROWN = """
SELECT c.oid::regclass::text
FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = ANY (ARRAY(SELECT to_regclass(t) FROM unnest(%s::text[]) AS t))
  AND s.n_mod_since_analyze > current_setting('autovacuum_analyze_threshold')::float8
      + current_setting('autovacuum_analyze_scale_factor')::float8 * greatest(c.reltuples, 0)
ORDER BY 1
"""


async def analyze_grown(conn: psycopg.AsyncConnection, tables: Sequence[str]) -> list[str]:
    """``ANALYZE`` those of ``tables`` that grew past autovacuum's threshold since their last
    analyze; returns the names analyzed. ``conn`` is in autocommit mode (each analyze commits on
    its own); a table another session is analyzing at that moment is skipped."""
    cur = await conn.execute(GROWN, (list(tables),))
    done = []
    for (name,) in await cur.fetchall():
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '200ms'")
                await conn.execute(sql.SQL("ANALYZE {}").format(sql.SQL(name)))  # a name from the catalog
        except psycopg.errors.LockNotAvailable:
            continue
        done.append(name)
    return done
