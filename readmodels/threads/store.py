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
- ``user_avatars``      per user, the avatar of their latest thread (``avatars.store``), served
                        by ``GET /v1/img/avatar/{id}``; written when a thread's start arrives.

``apply`` locks the touched ``threads`` rows in id order first (two projector instances may hold
the threads and the payments partitions of one thread), loads what the batch touches — the
``threads`` rows, the read and pin registers, the old preview rows (by primary key) and only the messages the batch
creates or deletes (by primary key), all sent before the first answer is read —, folds in memory with ``fold.fold_into`` and writes each
table back with one statement (``writes``). Its cost per touched thread does not grow with the
thread's length: the previews are rendered (``sides``, then ``fold.render_sides``) from one
statement for the whole batch that,
per (thread, side), finds the latest visible message with one descent of
``thread_messages_history`` (a delete simply falls back to the previous one) and whether a live
``payment_received`` message exists (``thread_messages_paid``). The message and unread counts are
the old preview row's plus the batch's deltas (each touched message counted before and after the
batch); they are counted in that statement only when there is no old row yet (the thread's start
just arrived) or, for the unread count, when the viewer's ``read_up_to`` moved (the messages after
the new marker). The rebuild's bulk path (``bulk``) loads whole threads and uses
``fold.render``, the reference the live path must match byte for byte.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import psycopg

from readside.readmodels.avatars.fold import Offer, offers
from readside.readmodels.avatars.store import USER_DDL, write_user_avatars
from readside.readmodels.base import Projection, TableCheck
from readside.readmodels.threads import scopes
from readside.readmodels.threads.fold import Message, Started, ThreadState, fold_into
from readside.readmodels.threads.sides import render_previews
from readside.readmodels.threads.writes import write_messages, write_previews, write_registers, write_threads
from readside.schemas import Event, MessageCreated, MessageDeleted, MessageRead, ThreadPinned

__all__ = ["PROJECTION", "DDL", "apply", "load_states", "starts"]

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
    old: dict[tuple[str, str], tuple] | None = None,
) -> dict[str, ThreadState]:
    """The stored state of each thread (empty for one not stored yet). ``lock``: insert the
    missing ``threads`` rows as stubs and lock them all, in id order (the live path).
    ``messages``: load only these ``(thread_id, message_id)`` (by primary key) instead of every
    message of the threads — the live path, whose cost must not grow with thread length.
    ``old``: filled with the stored preview rows of the threads started before (by primary key).
    Every statement is sent before the first answer is read (one round trip in pipeline mode)."""
    if lock:
        await conn.execute(
            "INSERT INTO threads (thread_id) SELECT unnest(%b::text[]) ON CONFLICT DO NOTHING", (tids,)
        )
    threads = await conn.execute(
        f"SELECT thread_id, {_THREAD_COLS} FROM threads WHERE thread_id = ANY(%b::text[]) "
        "ORDER BY thread_id" + (" FOR UPDATE" if lock else ""),
        (tids,),
    )
    if messages is None:
        msgs = await conn.execute(_MESSAGE_SELECT + "WHERE thread_id = ANY(%b::text[])", (tids,))
    else:
        keys = sorted(messages)
        msgs = await conn.execute(
            _MESSAGE_SELECT + "WHERE (thread_id, message_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))",
            ([t for t, _ in keys], [m for _, m in keys]),
        )
    reads = await conn.execute(
        "SELECT thread_id, user_id, read_at, read_up_to FROM thread_reads WHERE thread_id = ANY(%b::text[])", (tids,)
    )
    pins = await conn.execute(
        "SELECT thread_id, user_id, changed_at, pinned FROM thread_pins WHERE thread_id = ANY(%b::text[])", (tids,)
    )
    previews = None
    if old is not None:
        previews = await conn.execute(
            # Two primary-key lookups per thread: an ``IN (client, provider)`` join condition made
            # the planner scan the whole table (its cost grew with every preview stored).
            "SELECT p.user_id, p.thread_id, p.role, p.listed, p.unread_count, p.item FROM threads t "
            "CROSS JOIN LATERAL (VALUES (t.client_id), (t.provider_id)) AS side(user_id) "
            "JOIN thread_previews p ON p.user_id = side.user_id AND p.thread_id = t.thread_id "
            "WHERE t.thread_id = ANY(%b::text[])",
            (tids,),
        )
    states: dict[str, ThreadState] = {tid: ThreadState(tid) for tid in tids}
    for tid, cid, cname, cav, pid, pname, pbiz, pav, stype, created, state, state_at, paid in await threads.fetchall():
        started = Started(cid, cname, cav, pid, pname, pbiz, pav, stype, created) if cid is not None else None
        states[tid] = ThreadState(tid, started, (state_at, state) if state_at else None, paid)
    for tid, mid, *rest in await msgs.fetchall():
        states[tid].messages[mid] = Message(mid, *rest)
    for tid, uid, read_at, up_to in await reads.fetchall():
        states[tid].reads[uid] = (read_at, up_to)
    for tid, uid, at, pinned in await pins.fetchall():
        states[tid].pins[uid] = (at, pinned)
    if previews is not None and old is not None:
        old.update(
            ((u, t), (role, listed, unread, bytes(item))) for u, t, role, listed, unread, item in await previews.fetchall()
        )
    return states


async def apply(conn: psycopg.AsyncConnection, events: Sequence[Event]) -> set[str]:
    tids = sorted({e.payload.thread_id for e in events})  # type: ignore[attr-defined]
    touched = {
        (e.payload.thread_id, e.payload.message_id)
        for e in events
        if isinstance(e.payload, (MessageCreated, MessageDeleted))
    }
    old: dict[tuple[str, str], tuple] = {}
    states = await load_states(conn, tids, messages=touched, old=old)
    unstarted = {tid for tid in tids if states[tid].started is None}
    before = {key: states[key[0]].messages.get(key[1]) for key in touched}
    markers = {tid: dict(states[tid].reads) for tid in tids}
    changes = fold_batch(states, events)
    await write_threads(conn, [states[t] for t in tids])
    stored = {key for key, message in before.items() if message is not None}
    await write_messages(conn, states, changes.created, changes.deleted - set(changes.created), stored)
    await write_registers(conn, states, changes.reads, changes.pins)
    await write_user_avatars(conn, starts(states, unstarted))
    rows = await render_previews(conn, states, old, before, markers)
    return await write_previews(conn, rows, old) | {scopes.thread(t) for t in tids}


@dataclass
class Touched:
    """The rows a batch writes besides the threads and previews: messages created (the first
    ``message.created`` of an id, or one that fills a stub), messages deleted, read markers
    ``(thread, reader)`` and pins ``(thread, user)``."""

    created: dict[tuple[str, str], MessageCreated] = field(default_factory=dict)
    deleted: set[tuple[str, str]] = field(default_factory=set)
    reads: set[tuple[str, str]] = field(default_factory=set)
    pins: set[tuple[str, str]] = field(default_factory=set)


def fold_batch(states: dict[str, ThreadState], events: Sequence[Event]) -> Touched:
    """Fold ``events`` into ``states`` (loaded for every thread they name) and say which rows they
    touch: what the live ``apply`` and the rebuild's bulk loader both write."""
    touched = Touched()
    for event in events:
        p = event.payload
        state = states[p.thread_id]  # type: ignore[attr-defined]
        if isinstance(p, MessageCreated):
            known = state.messages.get(p.message_id)
            if known is None or known.created_at is None:
                touched.created[(p.thread_id, p.message_id)] = p
        elif isinstance(p, MessageDeleted):
            touched.deleted.add((p.thread_id, p.message_id))
        elif isinstance(p, MessageRead):
            touched.reads.add((p.thread_id, p.reader_id))
        elif isinstance(p, ThreadPinned):
            touched.pins.add((p.thread_id, p.user_id))
        fold_into(state, event)
    return touched


def starts(states: dict[str, ThreadState], unstarted: Collection[str]) -> list[Offer]:
    """The avatar offers of the threads among ``unstarted`` whose ``thread.started`` the batch
    brought (a thread's start is applied once: first wins)."""
    return [o for tid in sorted(unstarted) if (s := states[tid].started) is not None for o in offers(tid, s)]


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
    scopes=scopes.SCOPES,
)
