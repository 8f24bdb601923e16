"""Read queries for the thread endpoints: plain SQL, ``(conn, params) -> rows``.

Each is one indexed lookup on precomputed rows; list items come back as ready JSON bytes.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

__all__ = ["inbox_page", "message_page", "summary", "thread_access", "thread_participants", "viewer_version"]


async def viewer_version(conn: psycopg.AsyncConnection, user_id: str) -> int:
    cur = await conn.execute("SELECT version FROM viewer_versions WHERE user_id = %s", (user_id,))
    row = await cur.fetchone()
    return row[0] if row else 0


async def inbox_page(
    conn: psycopg.AsyncConnection,
    user_id: str,
    role: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> tuple[int, list[tuple[bytes, datetime, str]]]:
    """``(viewer version, rows)``: up to ``limit`` listed previews after the keyset position."""
    where = ["user_id = %(u)s", "listed"]
    if role is not None:
        where.append("role = %(r)s")
    if after is not None:
        where.append("(last_ts, thread_id) < (%(ts)s, %(tid)s)")
    cur = await conn.execute(
        "SELECT (SELECT version FROM viewer_versions WHERE user_id = %(u)s), item, last_ts, thread_id "
        f"FROM thread_previews WHERE {' AND '.join(where)} "
        "ORDER BY last_ts DESC, thread_id DESC LIMIT %(n)s",
        {"u": user_id, "r": role, "ts": after[0] if after else None, "tid": after[1] if after else None, "n": limit},
    )
    rows = await cur.fetchall()
    if not rows:
        return await viewer_version(conn, user_id), []
    return rows[0][0] or 0, [(bytes(item), ts, tid) for _, item, ts, tid in rows]


async def summary(conn: psycopg.AsyncConnection, user_id: str) -> tuple[int, dict[str, tuple[int, int]]]:
    cur = await conn.execute(
        "SELECT v.version, s.role, s.unread_total, s.thread_count "
        "FROM (SELECT %(u)s::text AS user_id) q "
        "LEFT JOIN viewer_versions v ON v.user_id = q.user_id "
        "LEFT JOIN thread_summaries s ON s.user_id = q.user_id",
        {"u": user_id},
    )
    rows = await cur.fetchall()
    version = rows[0][0] or 0
    return version, {role: (unread, count) for _, role, unread, count in rows if role is not None}


async def thread_access(conn: psycopg.AsyncConnection, thread_id: str, user_id: str) -> tuple[str, int] | None:
    """``(role, thread version)`` if the viewer takes part in the thread, else None."""
    cur = await conn.execute(
        "SELECT CASE WHEN client_id = %(u)s THEN 'client' ELSE 'provider' END, version FROM threads "
        "WHERE thread_id = %(t)s AND (client_id = %(u)s OR provider_id = %(u)s)",
        {"t": thread_id, "u": user_id},
    )
    row = await cur.fetchone()
    return (row[0], row[1]) if row else None


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
    role: str,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[tuple[bytes, datetime, str]]:
    keyset = "AND (created_at, message_id) < (%(ts)s, %(mid)s) " if before else ""
    cur = await conn.execute(
        "SELECT item, created_at, message_id FROM thread_messages "
        "WHERE thread_id = %(t)s AND NOT deleted AND visible_to IN ('both', %(r)s) "
        f"{keyset}ORDER BY created_at DESC, message_id DESC LIMIT %(n)s",
        {"t": thread_id, "r": role, "ts": before[0] if before else None, "mid": before[1] if before else None, "n": limit},
    )
    return [(bytes(item), ts, mid) for item, ts, mid in await cur.fetchall()]
