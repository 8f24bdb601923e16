"""Read queries for the thread endpoints: plain SQL, ``(conn, params) -> rows``.

Each is one indexed lookup on precomputed rows; a list page comes back as one row, its ready JSON
items already joined by PostgreSQL (``readside.readmodels.pages``).
Everything one response shows comes from ONE statement — the projection's generation, the version,
the access check and the rows — so a response never mixes two snapshots, nor two versions of a table swapped by a
rebuild's cutover between two statements.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from readside.readmodels.pages import Page, fetch_page, generation, page_sql, version_of
from readside.readmodels.threads.rules import VISIBLE, sql

__all__ = ["inbox_page", "message_page", "summary", "thread_access", "thread_participants", "viewer_version"]

GENERATION = generation("threads")
_ACCESS = (
    "SELECT CASE WHEN client_id = %(u)s THEN 'client' ELSE 'provider' END AS role, version, client_id, provider_id, "
    f"{GENERATION} AS generation "
    "FROM threads WHERE thread_id = %(t)s AND (client_id = %(u)s OR provider_id = %(u)s)"
)

# ``rules.visible``: what the viewer (on side ``a.role``) sees of the thread's messages; a message
# whose sender is not the participant its sender_type names counts as never sent.
_VISIBLE = sql(VISIBLE, m="tm", role="a.role", cid="a.client_id", pid="a.provider_id")


async def viewer_version(conn: psycopg.AsyncConnection, user_id: str) -> tuple[int, int]:
    """``(generation, viewer version)``."""
    return await version_of(conn, "threads", "viewer_versions", "user_id", user_id)


async def inbox_page(
    conn: psycopg.AsyncConnection,
    user_id: str,
    role: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> tuple[int, int, Page]:
    """``(generation, viewer version, page)``: up to ``limit`` listed previews after the keyset
    position; the page's keys are ``(last_ts, thread_id)``."""
    where = ["user_id = %(u)s", "listed"]
    if role is not None:
        where.append("role = %(r)s")
    if after is not None:
        where.append("(last_ts, thread_id) < (%(ts)s, %(tid)s)")
    page = page_sql(f"FROM thread_previews WHERE {' AND '.join(where)}", ("last_ts", "thread_id"),
                    "last_ts DESC, thread_id DESC")
    found = await fetch_page(
        conn,
        f"SELECT {GENERATION}, (SELECT version FROM viewer_versions WHERE user_id = %(u)s), p.* FROM ({page}) AS p",
        {"u": user_id, "r": role, "ts": after[0] if after else None, "tid": after[1] if after else None, "n": limit},
        2,
    )
    assert found is not None  # an aggregate: always one row
    (gen, version), rows = found
    return gen, version or 0, rows


async def summary(conn: psycopg.AsyncConnection, user_id: str) -> tuple[int, int, dict[str, tuple[int, int]]]:
    """``(generation, viewer version, {role: (unread total, thread count)})``."""
    cur = await conn.execute(
        f"SELECT {GENERATION}, v.version, s.role, s.unread_total, s.thread_count "
        "FROM (SELECT %(u)s::text AS user_id) q "
        "LEFT JOIN viewer_versions v ON v.user_id = q.user_id "
        "LEFT JOIN thread_summaries s ON s.user_id = q.user_id",
        {"u": user_id},
    )
    rows = await cur.fetchall()
    return rows[0][0], rows[0][1] or 0, {role: (unread, count) for _, _, role, unread, count in rows if role is not None}


async def thread_access(conn: psycopg.AsyncConnection, thread_id: str, user_id: str) -> tuple[str, int, int] | None:
    """``(role, generation, thread version)`` if the viewer takes part in the thread, else None."""
    cur = await conn.execute(_ACCESS, {"t": thread_id, "u": user_id})
    row = await cur.fetchone()
    return (row[0], row[4], row[1]) if row else None


async def thread_participants(conn: psycopg.AsyncConnection, thread_ids: list[str]) -> dict[str, tuple[str, str]]:
    """``{thread_id: (client_id, provider_id)}`` for the started threads among ``thread_ids``."""
    cur = await conn.execute(
        "SELECT thread_id, client_id, provider_id FROM threads WHERE thread_id = ANY(%s) AND client_id IS NOT NULL",
        (thread_ids,),
    )
    return {tid: (client, provider) for tid, client, provider in await cur.fetchall()}


async def message_page(
    conn: psycopg.AsyncConnection,
    thread_id: str,
    user_id: str,
    before: tuple[datetime, str] | None,
    limit: int,
) -> tuple[int, int, Page] | None:
    """``(generation, thread version, page of the messages visible to the viewer)``, or None if the viewer is
    not a participant (or there is no such thread): the access check and the page in one
    statement. Only the messages ``rules.visible`` to the viewer's side; the page's keys are
    ``(created_at, message_id)``."""
    keyset = " AND (created_at, message_id) < (%(ts)s, %(mid)s)" if before else ""
    page = page_sql(f"FROM thread_messages tm WHERE thread_id = %(t)s AND {_VISIBLE}{keyset}",
                    ("created_at", "message_id"), "created_at DESC, message_id DESC")
    found = await fetch_page(
        conn,
        f"SELECT a.generation, a.version, m.* FROM ({_ACCESS}) AS a CROSS JOIN LATERAL ({page}) AS m",
        {"t": thread_id, "u": user_id, "ts": before[0] if before else None, "mid": before[1] if before else None, "n": limit},
        2,
    )
    if found is None:
        return None
    (gen, version), rows = found
    return gen, version, rows
