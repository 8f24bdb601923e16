"""Thread read models, the storage side: DDL and the set-based ``apply`` of one batch.

Tables (ids ``COLLATE "C"``):
- ``threads``           one row per thread (a stub until ``thread.started``): participants,
                        state register, paid flag, a version bumped on every change.
- ``thread_messages``   every message, with its ready JSON ``item`` for the history endpoint
                        and its preview label; a delete seen first leaves a deleted stub.
- ``thread_reads``       per-user read markers: the greatest ``read_up_to`` wins (never moves back).
- ``thread_pins``        per-user registers (latest time wins).
- ``thread_previews``   one row per (viewer, thread): the inbox item as ready JSON bytes plus
                        the keyset columns; ``listed`` is false while a personalized video is unpaid.
- ``thread_summaries``  per (viewer, role): unread total and thread count, kept by deltas.
- ``viewer_versions``   per viewer, bumped whenever one of their previews changes (ETags).
- ``user_avatars``      per user, the avatar of their latest thread (``avatars_store``), served
                        by ``GET /v1/img/avatar/{id}``; written when a thread's start arrives.

``apply`` locks the touched ``threads`` rows in id order first (two projector instances may hold
the threads and the payments partitions of one thread), loads what the batch touches — the
``threads`` rows, the read and pin registers, the old preview rows (by primary key) and only the messages the batch
creates or deletes (by primary key) —, folds in memory with ``threads.fold_into`` and writes each
table back with one statement. Its cost per touched thread does not grow with the thread's length:
the previews are rendered (``threads.render_sides``) from one statement for the whole batch that,
per (thread, side), finds the latest visible message with one descent of
``thread_messages_history`` (a delete simply falls back to the previous one) and whether a live
``payment_received`` message exists (``thread_messages_paid``). The message and unread counts are
the old preview row's plus the batch's deltas (each touched message counted before and after the
batch); they are counted in that statement only when there is no old row yet (the thread's start
just arrived) or, for the unread count, when the viewer's ``read_up_to`` moved (the messages after
the new marker). The rebuild's bulk path (``threads_bulk``) loads whole threads and uses
``threads.render``, the reference the live path must match byte for byte.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Collection, Sequence

import orjson
import psycopg

from readside.readmodels.base import Projection, TableCheck
from readside.readmodels.avatars.fold import Offer, offers
from readside.readmodels.avatars.store import USER_DDL, write_user_avatars
from readside.readmodels.threads.fold import (
    Message,
    PreviewRow,
    Side,
    Started,
    ThreadState,
    fold_into,
    render_sides,
    unread,
    visible,
)
from readside.schemas import Event, MessageCreated, MessageDeleted, MessageRead, ThreadPinned
from readside.shared.jsonbytes import dumps

__all__ = ["PROJECTION", "DDL", "FROM_PARTICIPANT", "READS_FORWARD", "apply", "load_states", "message_item", "starts"]

DDL = """
CREATE TABLE IF NOT EXISTS threads (
    thread_id text COLLATE "C" PRIMARY KEY,
    client_id text COLLATE "C", client_name text, client_avatar text,
    provider_id text COLLATE "C", provider_name text, provider_business_name text, provider_avatar text,
    service_type text, created_at timestamptz,
    state text, state_at timestamptz,
    paid_by_payment bool NOT NULL DEFAULT false,
    version int8 NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS thread_messages (
    thread_id text COLLATE "C" NOT NULL,
    message_id text COLLATE "C" NOT NULL,
    created_at timestamptz,
    sender_id text COLLATE "C", sender_type text, visible_to text, system_key text,
    deleted bool NOT NULL DEFAULT false,
    preview text, preview_key text, preview_args jsonb,
    item bytea,
    PRIMARY KEY (thread_id, message_id)
);
CREATE INDEX IF NOT EXISTS thread_messages_history
    ON thread_messages (thread_id, created_at DESC, message_id DESC) WHERE NOT deleted;
CREATE INDEX IF NOT EXISTS thread_messages_paid
    ON thread_messages (thread_id) WHERE system_key = 'payment_received' AND NOT deleted;
CREATE TABLE IF NOT EXISTS thread_reads (
    thread_id text COLLATE "C" NOT NULL, user_id text COLLATE "C" NOT NULL,
    read_at timestamptz NOT NULL, read_up_to timestamptz NOT NULL,
    PRIMARY KEY (thread_id, user_id)
);
CREATE TABLE IF NOT EXISTS thread_pins (
    thread_id text COLLATE "C" NOT NULL, user_id text COLLATE "C" NOT NULL,
    changed_at timestamptz NOT NULL, pinned bool NOT NULL,
    PRIMARY KEY (thread_id, user_id)
);
CREATE TABLE IF NOT EXISTS thread_previews (
    user_id text COLLATE "C" NOT NULL,
    thread_id text COLLATE "C" NOT NULL,
    role text NOT NULL,
    listed bool NOT NULL,
    last_ts timestamptz NOT NULL,
    unread_count int4 NOT NULL,
    item bytea NOT NULL,
    PRIMARY KEY (user_id, thread_id)
);
CREATE INDEX IF NOT EXISTS thread_previews_inbox
    ON thread_previews (user_id, last_ts DESC, thread_id DESC) INCLUDE (item) WHERE listed;
CREATE INDEX IF NOT EXISTS thread_previews_inbox_role
    ON thread_previews (user_id, role, last_ts DESC, thread_id DESC) INCLUDE (item) WHERE listed;
CREATE TABLE IF NOT EXISTS thread_summaries (
    user_id text COLLATE "C" NOT NULL, role text NOT NULL,
    unread_total int8 NOT NULL DEFAULT 0, thread_count int8 NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, role)
);
CREATE TABLE IF NOT EXISTS viewer_versions (
    user_id text COLLATE "C" PRIMARY KEY,
    version int8 NOT NULL DEFAULT 0
);
""" + USER_DDL

_THREAD_COLS = (
    "client_id, client_name, client_avatar, provider_id, provider_name, provider_business_name, "
    "provider_avatar, service_type, created_at, state, state_at, paid_by_payment"
)


_MESSAGE_SELECT = (
    "SELECT thread_id, message_id, created_at, sender_id, sender_type, visible_to, system_key, deleted, "
    "preview, preview_key, preview_args FROM thread_messages "
)


async def load_states(
    conn: psycopg.AsyncConnection,
    tids: list[str],
    *,
    lock: bool = True,
    messages: Collection[tuple[str, str]] | None = None,
) -> dict[str, ThreadState]:
    """The stored state of each thread (empty for one not stored yet). ``lock``: insert the
    missing ``threads`` rows as stubs and lock them all, in id order (the live path).
    ``messages``: load only these ``(thread_id, message_id)`` (by primary key) instead of every
    message of the threads — the live path, whose cost must not grow with thread length."""
    if lock:
        await conn.execute(
            "INSERT INTO threads (thread_id) SELECT unnest(%b::text[]) ON CONFLICT DO NOTHING", (tids,)
        )
    cur = await conn.execute(
        f"SELECT thread_id, {_THREAD_COLS} FROM threads WHERE thread_id = ANY(%b::text[]) "
        "ORDER BY thread_id" + (" FOR UPDATE" if lock else ""),
        (tids,),
    )
    states: dict[str, ThreadState] = {tid: ThreadState(tid) for tid in tids}
    for tid, cid, cname, cav, pid, pname, pbiz, pav, stype, created, state, state_at, paid in await cur.fetchall():
        started = Started(cid, cname, cav, pid, pname, pbiz, pav, stype, created) if cid is not None else None
        states[tid] = ThreadState(tid, started, (state_at, state) if state_at else None, paid)
    if messages is None:
        cur = await conn.execute(_MESSAGE_SELECT + "WHERE thread_id = ANY(%b::text[])", (tids,))
    else:
        keys = sorted(messages)
        cur = await conn.execute(
            _MESSAGE_SELECT + "WHERE (thread_id, message_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))",
            ([t for t, _ in keys], [m for _, m in keys]),
        )
    for tid, mid, *rest in await cur.fetchall():
        states[tid].messages[mid] = Message(mid, *rest)
    cur = await conn.execute(
        "SELECT thread_id, user_id, read_at, read_up_to FROM thread_reads WHERE thread_id = ANY(%b::text[])", (tids,)
    )
    for tid, uid, read_at, up_to in await cur.fetchall():
        states[tid].reads[uid] = (read_at, up_to)
    cur = await conn.execute(
        "SELECT thread_id, user_id, changed_at, pinned FROM thread_pins WHERE thread_id = ANY(%b::text[])", (tids,)
    )
    for tid, uid, at, pinned in await cur.fetchall():
        states[tid].pins[uid] = (at, pinned)
    return states


async def _old_previews(conn: psycopg.AsyncConnection, states: list[ThreadState]) -> dict[tuple[str, str], tuple]:
    """The stored preview rows of the threads started before the batch, by primary key."""
    keys = sorted((user, s.thread_id) for s in states if s.started for user in (s.started.client_id, s.started.provider_id))
    if not keys:
        return {}
    cur = await conn.execute(
        "SELECT user_id, thread_id, role, listed, unread_count, item FROM thread_previews "
        "WHERE (user_id, thread_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))",
        ([u for u, _ in keys], [t for _, t in keys]),
    )
    return {(u, t): (role, listed, unread, bytes(item)) for u, t, role, listed, unread, item in await cur.fetchall()}


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


async def apply(conn: psycopg.AsyncConnection, events: Sequence[Event]) -> set[str]:
    tids = sorted({e.payload.thread_id for e in events})  # type: ignore[attr-defined]
    touched = {
        (e.payload.thread_id, e.payload.message_id)  # type: ignore[attr-defined]
        for e in events
        if isinstance(e.payload, (MessageCreated, MessageDeleted))
    }
    states = await load_states(conn, tids, messages=touched)
    unstarted = {tid for tid in tids if states[tid].started is None}
    old = await _old_previews(conn, [states[t] for t in tids])
    before = {key: states[key[0]].messages.get(key[1]) for key in touched}
    markers = {tid: dict(states[tid].reads) for tid in tids}
    created: dict[tuple[str, str], MessageCreated] = {}
    deleted: set[tuple[str, str]] = set()
    reads: set[tuple[str, str]] = set()
    pins: set[tuple[str, str]] = set()
    for event in events:
        p = event.payload
        state = states[p.thread_id]  # type: ignore[attr-defined]
        if isinstance(p, MessageCreated):
            known = state.messages.get(p.message_id)
            if known is None or known.created_at is None:
                created[(p.thread_id, p.message_id)] = p
        elif isinstance(p, MessageDeleted):
            deleted.add((p.thread_id, p.message_id))
        elif isinstance(p, MessageRead):
            reads.add((p.thread_id, p.reader_id))
        elif isinstance(p, ThreadPinned):
            pins.add((p.thread_id, p.user_id))
        fold_into(state, event)
    await _write_threads(conn, [states[t] for t in tids])
    await _write_messages(conn, states, created, deleted - set(created))
    await _write_registers(conn, states, reads, pins)
    await write_user_avatars(conn, starts(states, unstarted))
    rows = await _render(conn, states, old, before, markers)
    return await _write_previews(conn, rows, old) | {f"thread:{t}" for t in tids}


def starts(states: dict[str, ThreadState], unstarted: Collection[str]) -> list[Offer]:
    """The avatar offers of the threads among ``unstarted`` whose ``thread.started`` the batch
    brought (a thread's start is applied once: first wins)."""
    return [o for tid in sorted(unstarted) if (s := states[tid].started) is not None for o in offers(tid, s)]


def _up_to(marker: tuple | None) -> Any:
    return marker[1] if marker else None


async def _render(
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
    cur = await conn.execute(_SIDES, tuple(list(col) for col in zip(*plan)))
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


# ``threads.from_participant`` in SQL, for message row ``{m}`` of a thread whose participants are
# ``{cid}`` and ``{pid}``: a system message, or a user message from the participant its
# sender_type names (the history endpoint uses it too).
FROM_PARTICIPANT = (
    "({m}.sender_type = 'system' OR {m}.sender_id = CASE {m}.sender_type WHEN 'client' THEN {cid} "
    "WHEN 'provider' THEN {pid} END)"
)
_OURS = FROM_PARTICIPANT.format(m="m", cid="u.cid", pid="u.pid")

# Per (thread, side): the latest visible message (an index descent on thread_messages_history),
# the counts passed in or, when NULL, counted (the unread ones from the marker on), and whether a
# live payment_received message exists (thread_messages_paid). CASE runs a subquery only when needed.
_SIDES = f"""
SELECT u.tid, u.role, l.message_id, l.created_at, l.sender_type, l.preview, l.preview_key, l.preview_args,
    CASE WHEN u.n IS NULL THEN (
        SELECT count(*) FROM thread_messages m
        WHERE m.thread_id = u.tid AND NOT m.deleted AND m.visible_to IN ('both', u.role) AND {_OURS}
    ) ELSE u.n END,
    CASE WHEN u.unread IS NULL THEN (
        SELECT count(*) FROM thread_messages m
        WHERE m.thread_id = u.tid AND NOT m.deleted AND m.created_at > coalesce(u.up_to, '-infinity')
            AND m.visible_to IN ('both', u.role) AND m.sender_id IS DISTINCT FROM u.uid AND {_OURS}
    ) ELSE u.unread END,
    EXISTS (
        SELECT FROM thread_messages m
        WHERE m.thread_id = u.tid AND m.system_key = 'payment_received' AND NOT m.deleted AND {_OURS}
    )
FROM unnest(%b::text[], %b::text[], %b::text[], %b::timestamptz[], %b::int8[], %b::int8[], %b::text[], %b::text[])
    AS u(tid, role, uid, up_to, n, unread, cid, pid)
LEFT JOIN LATERAL (
    SELECT m.message_id, m.created_at, m.sender_type, m.preview, m.preview_key, m.preview_args
    FROM thread_messages m
    WHERE m.thread_id = u.tid AND NOT m.deleted AND m.visible_to IN ('both', u.role) AND {_OURS}
    ORDER BY m.created_at DESC, m.message_id DESC
    LIMIT 1
) l ON true
"""


async def _write_threads(conn: psycopg.AsyncConnection, states: list[ThreadState]) -> None:
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


async def _write_messages(
    conn: psycopg.AsyncConnection,
    states: dict[str, ThreadState],
    created: dict[tuple[str, str], MessageCreated],
    deleted: set[tuple[str, str]],
) -> None:
    if created:
        keys = sorted(created)
        msgs = [states[t].messages[m] for t, m in keys]
        await conn.execute(
            "INSERT INTO thread_messages (thread_id, message_id, created_at, sender_id, sender_type, visible_to, "
            "system_key, deleted, preview, preview_key, preview_args, item) "
            "SELECT t, m, c, s, st, v, k, d, pv, pk, pa::jsonb, i FROM unnest(%b::text[], %b::text[], "
            "%b::timestamptz[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bool[], %b::text[], %b::text[], "
            "%b::text[], %b::bytea[]) AS u(t, m, c, s, st, v, k, d, pv, pk, pa, i) "
            "ON CONFLICT (thread_id, message_id) DO UPDATE SET created_at = excluded.created_at, "
            "sender_id = excluded.sender_id, sender_type = excluded.sender_type, visible_to = excluded.visible_to, "
            "system_key = excluded.system_key, deleted = excluded.deleted, preview = excluded.preview, "
            "preview_key = excluded.preview_key, preview_args = excluded.preview_args, item = excluded.item",
            (
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
            ),
        )
    if deleted:
        keys = sorted(deleted)
        await conn.execute(
            "INSERT INTO thread_messages (thread_id, message_id, deleted) "
            "SELECT t, m, true FROM unnest(%b::text[], %b::text[]) AS u(t, m) "
            "ON CONFLICT (thread_id, message_id) DO UPDATE SET deleted = true",
            ([t for t, _ in keys], [m for _, m in keys]),
        )


# The ``thread_reads`` upsert's condition: the greatest ``read_up_to`` wins, ties to the later
# ``read_at`` (``threads.further``), whatever order the writes come in.
READS_FORWARD = (
    " WHERE (excluded.read_up_to, excluded.read_at) > (thread_reads.read_up_to, thread_reads.read_at)"
)


async def _write_registers(
    conn: psycopg.AsyncConnection,
    states: dict[str, ThreadState],
    reads: set[tuple[str, str]],
    pins: set[tuple[str, str]],
) -> None:
    """Upsert the touched registers with the fold's values. A read marker is only ever replaced by
    one that reaches further (``READS_FORWARD``): the fold already merged the stored marker, and
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


async def _write_previews(
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
    return {f"viewer:{u}" for u in users}


PROJECTION = Projection(
    name="threads",
    version=1,
    topics=("threads.events", "payments.events"),
    event_types=frozenset(
        {
            "thread.started",
            "message.created",
            "message.read",
            "message.deleted",
            "thread.state_changed",
            "thread.pinned",
            "payment.received",
        }
    ),
    ddl=DDL,
    apply=apply,
    tables=(
        "threads", "thread_messages", "thread_reads", "thread_pins", "thread_previews", "thread_summaries",
        "viewer_versions", "user_avatars",
    ),
    checks=(
        TableCheck("threads", exclude=("version",)),
        TableCheck("thread_summaries", where="(unread_total, thread_count) <> (0, 0)"),
        TableCheck("viewer_versions", skip=True),
    ),
)
