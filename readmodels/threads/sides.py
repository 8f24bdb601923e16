"""Thread read models, the live path's previews: both sides of every touched thread from one
statement, whatever the threads' length.

Per (thread, side), ``SIDES`` finds the latest visible message with one descent of
``thread_messages_history`` (a delete simply falls back to the previous one) and whether a live
``payment_received`` message exists (``thread_messages_paid``), with the rules' SQL forms
(``rules.VISIBLE``, ``UNREAD``, ``PAID``). The message and unread counts are the old preview
row's plus the batch's deltas, from the rules' Python forms, or counted by ``SIDES`` when there
is no old row or the viewer's read marker moved. The rows are then rendered by
``fold.render_sides``, so they equal the pure ``fold.render`` byte for byte.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
import psycopg

from readside.readmodels.threads.fold import Message, PreviewRow, Side, ThreadState, render_sides
from readside.readmodels.threads.rules import PAID, UNREAD, VISIBLE, sql, unread, visible

__all__ = ["SIDES", "render_previews"]

_U = {"m": "m", "cid": "u.cid", "pid": "u.pid", "role": "u.role", "user": "u.uid", "up_to": "u.up_to"}

# Per (thread, side): the latest visible message (an index descent on thread_messages_history),
# the counts passed in or, when NULL, counted (the unread ones from the marker on), and whether a
# live payment_received message exists (thread_messages_paid). CASE runs a subquery only when needed.
SIDES = f"""
SELECT u.tid, u.role, l.message_id, l.created_at, l.sender_type, l.preview, l.preview_key, l.preview_args,
    CASE WHEN u.n IS NULL THEN (
        SELECT count(*) FROM thread_messages m
        WHERE m.thread_id = u.tid AND {sql(VISIBLE, **_U)}
    ) ELSE u.n END,
    CASE WHEN u.unread IS NULL THEN (
        SELECT count(*) FROM thread_messages m
        WHERE m.thread_id = u.tid AND {sql(UNREAD, **_U)}
    ) ELSE u.unread END,
    EXISTS (
        SELECT FROM thread_messages m
        WHERE m.thread_id = u.tid AND {sql(PAID, **_U)}
    )
FROM unnest(%b::text[], %b::text[], %b::text[], %b::timestamptz[], %b::int8[], %b::int8[], %b::text[], %b::text[])
    AS u(tid, role, uid, up_to, n, unread, cid, pid)
LEFT JOIN LATERAL (
    SELECT m.message_id, m.created_at, m.sender_type, m.preview, m.preview_key, m.preview_args
    FROM thread_messages m
    WHERE m.thread_id = u.tid AND {sql(VISIBLE, **_U)}
    ORDER BY m.created_at DESC, m.message_id DESC
    LIMIT 1
) l ON true
"""


def _up_to(marker: tuple | None) -> Any:
    return marker[1] if marker else None


async def render_previews(
    conn: psycopg.AsyncConnection,
    states: dict[str, ThreadState],
    old: dict[tuple[str, str], tuple],
    before: dict[tuple[str, str], Message | None],
    markers: dict[str, dict[str, tuple]],
) -> list[PreviewRow]:
    """Both participants' rows of every started touched thread, from the messages already written.

    The counts are the old preview row's plus the batch's deltas (each touched message counted
    before and after), unless there is no old row (the start just arrived: count once) or the
    viewer's read marker moved (count the visible messages after the new marker). The latest
    visible message and the paid flag are index lookups. One statement for the whole batch.
    """
    by_thread: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for key in before:
        by_thread[key[0]].append(key)
    # tid, role, user, up_to, count, unread, client, provider
    plan: list[tuple[str, str, str, Any, int | None, int | None, str, str]] = []
    for tid, state in states.items():
        s = state.started
        if s is None:
            continue
        for role, user in (("client", s.client_id), ("provider", s.provider_id)):
            marker = state.reads.get(user)
            prior = old.get((user, tid))
            count = unread_count = None
            if prior is not None and prior[0] == role:
                count = orjson.loads(prior[3])["meta"]["message_count"]
                for key in by_thread[tid]:
                    count += visible(state.messages[key[1]], role, s) - visible(before[key], role, s)
                if _up_to(markers[tid].get(user)) == _up_to(marker):
                    unread_count = prior[2]
                    for key in by_thread[tid]:
                        unread_count += unread(state.messages[key[1]], role, user, marker, s) - unread(
                            before[key], role, user, marker, s
                        )
            plan.append((tid, role, user, marker[1] if marker else None, count, unread_count, s.client_id, s.provider_id))
    if not plan:
        return []
    # The latest visible message is one descent of thread_messages_history (it stops at the first
    # visible row); the planner, which cannot estimate the visibility filter, prefers a bitmap scan
    # of the whole thread plus a sort (~30 us per side instead of ~5 us), so not in this statement.
    await conn.execute("SET LOCAL enable_bitmapscan = off")
    cur = await conn.execute(SIDES, tuple(list(col) for col in zip(*plan, strict=True)))
    await conn.execute("SET LOCAL enable_bitmapscan TO DEFAULT")
    found: dict[tuple[str, str], tuple] = {(r[0], r[1]): r for r in await cur.fetchall()}
    rows: list[PreviewRow] = []
    for tid in sorted({p[0] for p in plan}):
        by_role, paid = {}, states[tid].paid_by_payment
        for role in ("client", "provider"):
            _, _, mid, created_at, sender_type, preview, key, args, count, unread_count, paid_msg = found[(tid, role)]
            last = Message(mid, created_at, sender_type=sender_type, preview=preview, preview_key=key, preview_args=args)
            by_role[role] = Side(last if mid is not None else None, unread_count, count)
            paid = paid or paid_msg
        rows.extend(render_sides(states[tid], paid, by_role))
    return rows
