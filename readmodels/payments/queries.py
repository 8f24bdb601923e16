"""Payments per thread, the API's read: one statement, the access check included."""

from __future__ import annotations

import psycopg

from readside.readmodels.pages import generation

__all__ = ["thread_payments"]


async def thread_payments(
    conn: psycopg.AsyncConnection, thread_id: str, user_id: str
) -> tuple[int, int, bytes | None] | None:
    """``(generation, version, item)`` of ``thread_id`` for a participant (``item`` None: no payment yet);
    None when ``user_id`` is not one of the thread's participants, or there is no such thread —
    the same answer, so a stranger learns nothing."""
    cur = await conn.execute(
        f"SELECT {generation('payments')}, coalesce(p.version, 0), p.item FROM threads t "
        "LEFT JOIN thread_payment_totals p ON p.thread_id = t.thread_id "
        "WHERE t.thread_id = %(t)s AND %(u)s IN (t.client_id, t.provider_id)",
        {"t": thread_id, "u": user_id},
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return row[0], row[1], None if row[2] is None else bytes(row[2])
