"""Thread read models, the live path's writes: one set-based statement per table, rows in key order.

- ``write_threads``    the participants, state register and paid flag of the touched threads;
- ``write_messages``   the messages the batch creates (whole: a plain insert, or an update of the
                       stored stub) or deletes (the sticky flag, or a deleted stub for a delete
                       seen before its create);
- ``write_registers``  the touched read markers (``rules.READS_FORWARD``) and pins;
- ``write_previews``   the preview rows that changed, the summaries' deltas and the viewers'
                       versions; returns the ``viewer`` scopes it bumped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection

import psycopg

from readside.readmodels.threads import scopes
from readside.readmodels.threads.fold import PreviewRow, ThreadState
from readside.readmodels.threads.rules import READS_FORWARD
from readside.schemas import MessageCreated
from readside.shared.jsonbytes import dumps

__all__ = ["message_item", "write_messages", "write_previews", "write_registers", "write_threads"]


def message_item(p: MessageCreated) -> bytes:
    return dumps(
        {
            "message_id": p.message_id,
            "sender_id": p.sender_id,
            "sender_type": p.sender_type,
            "message_type": p.message_type,
            "content": p.content,
            "system_key": p.system_key,
            "system_args": p.system_args,
            "attachment": p.attachment.model_dump() if p.attachment is not None else None,
            "created_at": p.created_at,
        }
    )


async def write_threads(conn: psycopg.AsyncConnection, states: list[ThreadState]) -> None:
    def col(get):  # noqa: ANN001, ANN202 - local helper
        return [get(s.started) if s.started else None for s in states]

    await conn.execute(
        "UPDATE threads t SET client_id = u.cid, client_name = u.cname, client_avatar = u.cav, "
        "provider_id = u.pid, provider_name = u.pname, provider_business_name = u.pbiz, provider_avatar = u.pav, "
        "service_type = u.stype, created_at = u.created, state = u.state, state_at = u.state_at, "
        "paid_by_payment = u.paid, version = t.version + 1 "
        "FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], "
        "%b::text[], %b::timestamptz[], %b::text[], %b::timestamptz[], %b::bool[]) "
        "AS u(tid, cid, cname, cav, pid, pname, pbiz, pav, stype, created, state, state_at, paid) "
        "WHERE t.thread_id = u.tid",
        (
            [s.thread_id for s in states],
            col(lambda x: x.client_id),
            col(lambda x: x.client_name),
            col(lambda x: x.client_avatar),
            col(lambda x: x.provider_id),
            col(lambda x: x.provider_name),
            col(lambda x: x.provider_business_name),
            col(lambda x: x.provider_avatar),
            col(lambda x: x.service_type),
            col(lambda x: x.created_at),
            [s.state[1] if s.state else None for s in states],
            [s.state[0] if s.state else None for s in states],
            [s.paid_by_payment for s in states],
        ),
    )


_MESSAGE_COLUMNS = (
    "%b::text[], %b::text[], %b::timestamptz[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bool[], %b::text[], "
    "%b::text[], %b::text[], %b::bytea[]) AS u(t, m, c, s, st, v, k, d, pv, pk, pa, i)"
)


async def write_messages(
    conn: psycopg.AsyncConnection,
    states: dict[str, ThreadState],
    created: dict[tuple[str, str], MessageCreated],
    deleted: set[tuple[str, str]],
    stored: Collection[tuple[str, str]],
) -> None:
    """``stored``: the keys that have a row already (loaded under the threads' locks: a deleted
    stub a create fills in) — updated; the other created messages are inserted (no conflict check)."""
    for keys, fill in ((sorted(k for k in created if k not in stored), False), (sorted(k for k in created if k in stored), True)):
        if not keys:
            continue
        msgs = [states[t].messages[m] for t, m in keys]
        columns = (
            [t for t, _ in keys],
            [m for _, m in keys],
            [m.created_at for m in msgs],
            [m.sender_id for m in msgs],
            [m.sender_type for m in msgs],
            [m.visible_to for m in msgs],
            [m.system_key for m in msgs],
            [m.deleted for m in msgs],
            [m.preview for m in msgs],
            [m.preview_key for m in msgs],
            [dumps(m.preview_args).decode() if m.preview_args is not None else None for m in msgs],
            [message_item(created[k]) for k in keys],
        )
        if fill:
            await conn.execute(
                "UPDATE thread_messages tm SET created_at = u.c, sender_id = u.s, sender_type = u.st, visible_to = u.v, "
                "system_key = u.k, deleted = u.d, preview = u.pv, preview_key = u.pk, preview_args = u.pa::jsonb, item = u.i "
                "FROM unnest(" + _MESSAGE_COLUMNS + " WHERE tm.thread_id = u.t AND tm.message_id = u.m",
                columns,
            )
        else:
            await conn.execute(
                "INSERT INTO thread_messages (thread_id, message_id, created_at, sender_id, sender_type, visible_to, "
                "system_key, deleted, preview, preview_key, preview_args, item) "
                "SELECT t, m, c, s, st, v, k, d, pv, pk, pa::jsonb, i FROM unnest(" + _MESSAGE_COLUMNS,
                columns,
            )
    if deleted:
        keys = sorted(deleted)
        await conn.execute(
            "INSERT INTO thread_messages (thread_id, message_id, deleted) "
            "SELECT t, m, true FROM unnest(%b::text[], %b::text[]) AS u(t, m) "
            "ON CONFLICT (thread_id, message_id) DO UPDATE SET deleted = true",
            ([t for t, _ in keys], [m for _, m in keys]),
        )


async def write_registers(
    conn: psycopg.AsyncConnection,
    states: dict[str, ThreadState],
    reads: set[tuple[str, str]],
    pins: set[tuple[str, str]],
) -> None:
    """Upsert the touched registers with the fold's values. A read marker is only ever replaced by
    one that reaches further (``rules.READS_FORWARD``): the fold already merged the stored marker, and
    the statement itself keeps the rule too, so no writer can move a marker back."""
    for table, cols, keys, get, guard in (
        ("thread_reads", ("read_at", "read_up_to"), sorted(reads), lambda t, u: states[t].reads[u], READS_FORWARD),
        ("thread_pins", ("changed_at", "pinned"), sorted(pins), lambda t, u: states[t].pins[u], ""),
    ):
        if not keys:
            continue
        values = [get(t, u) for t, u in keys]
        kind = "bool" if table == "thread_pins" else "timestamptz"
        await conn.execute(
            f"INSERT INTO {table} (thread_id, user_id, {cols[0]}, {cols[1]}) "
            f"SELECT * FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::{kind}[]) "
            f"ON CONFLICT (thread_id, user_id) DO UPDATE SET {cols[0]} = excluded.{cols[0]}, {cols[1]} = excluded.{cols[1]}"
            + guard,
            ([t for t, _ in keys], [u for _, u in keys], [v[0] for v in values], [v[1] for v in values]),
        )


async def write_previews(
    conn: psycopg.AsyncConnection, rows: list[PreviewRow], old: dict[tuple[str, str], tuple]
) -> set[str]:
    changed: list[tuple[PreviewRow, bytes]] = []
    deltas: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        item = dumps(row.item)
        before = old.get((row.user_id, row.thread_id))
        if before == (row.role, row.listed, row.unread_count, item):
            continue
        changed.append((row, item))
        if before is not None and before[1]:
            d = deltas[(row.user_id, before[0])]
            d[0] -= before[2]
            d[1] -= 1
        if row.listed:
            d = deltas[(row.user_id, row.role)]
            d[0] += row.unread_count
            d[1] += 1
    if not changed:
        return set()
    changed.sort(key=lambda ri: (ri[0].user_id, ri[0].thread_id))
    await conn.execute(
        "INSERT INTO thread_previews (user_id, thread_id, role, listed, last_ts, unread_count, item) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::bool[], %b::timestamptz[], %b::int4[], %b::bytea[]) "
        "ON CONFLICT (user_id, thread_id) DO UPDATE SET role = excluded.role, listed = excluded.listed, "
        "last_ts = excluded.last_ts, unread_count = excluded.unread_count, item = excluded.item",
        (
            [r.user_id for r, _ in changed],
            [r.thread_id for r, _ in changed],
            [r.role for r, _ in changed],
            [r.listed for r, _ in changed],
            [r.last_ts for r, _ in changed],
            [r.unread_count for r, _ in changed],
            [i for _, i in changed],
        ),
    )
    keys = sorted(k for k, d in deltas.items() if d != [0, 0])
    if keys:
        await conn.execute(
            "INSERT INTO thread_summaries (user_id, role, unread_total, thread_count) "
            "SELECT * FROM unnest(%b::text[], %b::text[], %b::int8[], %b::int8[]) "
            "ON CONFLICT (user_id, role) DO UPDATE SET unread_total = thread_summaries.unread_total + excluded.unread_total, "
            "thread_count = thread_summaries.thread_count + excluded.thread_count",
            ([u for u, _ in keys], [r for _, r in keys], [deltas[k][0] for k in keys], [deltas[k][1] for k in keys]),
        )
    users = sorted({r.user_id for r, _ in changed})
    await conn.execute(
        "INSERT INTO viewer_versions (user_id, version) SELECT unnest(%b::text[]), 1 "
        "ON CONFLICT (user_id) DO UPDATE SET version = viewer_versions.version + 1",
        (users,),
    )
    return {scopes.viewer(u) for u in users}
