"""Thread read models, the rebuild's bulk write path: fold a large batch in memory, COPY the rows.

Used by ``readside rebuild`` for the bulk phase only (shadow tables that nobody else writes, with
only their primary keys). Per batch:

- load the stored state of the touched threads that earlier batches wrote (one query per
  table), locking their ``threads`` rows in id order as the live path does; ``cached()`` is an
  ``apply`` that keeps the states it wrote (the :data:`CACHE_THREADS` latest) and loads only the
  others — for the only writer of its threads: the bulk phase in one process, or a bulk worker,
  which owns its threads' keys (a thread's messages and payments are keyed by its id). A call
  that raises (a poison event is being isolated) drops the states it took: they are loaded
  again, as the savepoint left them;
- fold the batch with ``fold.fold_into`` and render both participants' preview rows;
- COPY the threads, the new or deleted messages, the read and pin registers and the previews
  into session-local staging tables, and upsert each table from its staging table with one
  statement (binary COPY, C-encoded by psycopg: no text escaping of the items' bytes; the
  ``unnest`` arrays of the live path are encoded in Python, which costs more than the
  database's work at these batch sizes);
- offer the avatars of the threads the batch started to ``user_avatars``, as the live path does
  (``avatars.store.write_user_avatars``: a register that keeps the latest thread's, in one statement).

``thread_summaries`` and ``viewer_versions`` are not kept per batch: ``finish`` derives them
from ``thread_previews`` in one statement each once every event is in, which is what the live
path's deltas add up to (the versions start at 1; they only name ETags).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import psycopg

from readside.readmodels.avatars.store import write_user_avatars
from readside.readmodels.base import BulkLoad
from readside.readmodels.threads.fold import ThreadState, render
from readside.readmodels.threads.rules import READS_FORWARD
from readside.readmodels.threads.store import fold_batch, load_states, starts
from readside.readmodels.threads.writes import message_item
from readside.schemas import Event
from readside.shared.jsonbytes import dumps

__all__ = ["BULK", "CACHE_THREADS", "apply", "cached", "finish"]

CACHE_THREADS = 20_000  # thread states a cached apply keeps between batches (the latest written)

_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS bulk_threads (
    thread_id text, client_id text, client_name text, client_avatar text, provider_id text,
    provider_name text, provider_business_name text, provider_avatar text, service_type text,
    created_at timestamptz, state text, state_at timestamptz, paid bool
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS bulk_messages (
    thread_id text, message_id text, created_at timestamptz, sender_id text, sender_type text,
    visible_to text, system_key text, deleted bool, preview text, preview_key text,
    preview_args_json text, item bytea
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS bulk_registers (
    pin bool, thread_id text, user_id text, at timestamptz, up_to timestamptz, pinned bool
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS bulk_previews (
    user_id text, thread_id text, role text, listed bool, last_ts timestamptz, unread_count int4, item bytea
) ON COMMIT DELETE ROWS;
"""

# the staging tables' column types, for binary COPY (no text escaping of the items' bytes)
_THREADS = ["text"] * 9 + ["timestamptz", "text", "timestamptz", "bool"]
_MESSAGES = ["text", "text", "timestamptz"] + ["text"] * 4 + ["bool", "text", "text", "text", "bytea"]
_REGISTERS = ["bool", "text", "text", "timestamptz", "timestamptz", "bool"]
_PREVIEWS = ["text", "text", "text", "bool", "timestamptz", "int4", "bytea"]

_UPSERTS = (
    "INSERT INTO threads (thread_id, client_id, client_name, client_avatar, provider_id, provider_name, "
    "provider_business_name, provider_avatar, service_type, created_at, state, state_at, paid_by_payment) "
    "SELECT * FROM bulk_threads ON CONFLICT (thread_id) DO UPDATE SET client_id = excluded.client_id, "
    "client_name = excluded.client_name, client_avatar = excluded.client_avatar, provider_id = excluded.provider_id, "
    "provider_name = excluded.provider_name, provider_business_name = excluded.provider_business_name, "
    "provider_avatar = excluded.provider_avatar, service_type = excluded.service_type, "
    "created_at = excluded.created_at, state = excluded.state, state_at = excluded.state_at, "
    "paid_by_payment = excluded.paid_by_payment, version = threads.version + 1",
    # a message created in the batch is written whole (its state already holds a stored delete)
    "INSERT INTO thread_messages (thread_id, message_id, created_at, sender_id, sender_type, visible_to, "
    "system_key, deleted, preview, preview_key, preview_args, item) SELECT thread_id, message_id, created_at, sender_id, "
    "sender_type, visible_to, system_key, deleted, preview, preview_key, preview_args_json::jsonb, item "
    "FROM bulk_messages WHERE item IS NOT NULL "
    "ON CONFLICT (thread_id, message_id) DO UPDATE SET created_at = excluded.created_at, "
    "sender_id = excluded.sender_id, sender_type = excluded.sender_type, visible_to = excluded.visible_to, "
    "system_key = excluded.system_key, deleted = excluded.deleted, preview = excluded.preview, "
    "preview_key = excluded.preview_key, preview_args = excluded.preview_args, item = excluded.item",
    # a delete of a message created earlier (or not yet): the sticky flag, or a deleted stub
    "INSERT INTO thread_messages (thread_id, message_id, deleted) "
    "SELECT thread_id, message_id, true FROM bulk_messages WHERE item IS NULL "
    "ON CONFLICT (thread_id, message_id) DO UPDATE SET deleted = true",
    "INSERT INTO thread_reads (thread_id, user_id, read_at, read_up_to) "
    "SELECT thread_id, user_id, at, up_to FROM bulk_registers WHERE NOT pin "
    "ON CONFLICT (thread_id, user_id) DO UPDATE SET read_at = excluded.read_at, read_up_to = excluded.read_up_to"
    + READS_FORWARD,
    "INSERT INTO thread_pins (thread_id, user_id, changed_at, pinned) "
    "SELECT thread_id, user_id, at, pinned FROM bulk_registers WHERE pin "
    "ON CONFLICT (thread_id, user_id) DO UPDATE SET changed_at = excluded.changed_at, pinned = excluded.pinned",
    "INSERT INTO thread_previews (user_id, thread_id, role, listed, last_ts, unread_count, item) "
    "SELECT * FROM bulk_previews ON CONFLICT (user_id, thread_id) DO UPDATE SET role = excluded.role, "
    "listed = excluded.listed, last_ts = excluded.last_ts, unread_count = excluded.unread_count, item = excluded.item",
)


def _tids(events: Sequence[Event]) -> list[str]:
    return sorted({e.payload.thread_id for e in events})  # type: ignore[attr-defined]


async def apply(conn: psycopg.AsyncConnection, events: Sequence[Event]) -> None:
    tids = _tids(events)
    await _write(conn, events, tids, await load_states(conn, tids))


def cached(limit: int = CACHE_THREADS) -> Callable[[psycopg.AsyncConnection, Sequence[Event]], Awaitable[None]]:
    cache: dict[str, ThreadState] = {}  # least recently written first

    async def apply(conn: psycopg.AsyncConnection, events: Sequence[Event]) -> None:
        tids = _tids(events)
        missing = [t for t in tids if t not in cache]
        states = await load_states(conn, missing) if missing else {}
        for tid in tids:
            if tid not in states:
                states[tid] = cache.pop(tid)  # out of the cache until written
        await _write(conn, events, tids, states)
        cache.update(states)
        while len(cache) > limit:
            del cache[next(iter(cache))]

    return apply


async def _write(conn: psycopg.AsyncConnection, events: Sequence[Event], tids: list[str], states: dict[str, ThreadState]) -> None:
    unstarted = {tid for tid in tids if states[tid].started is None}
    touched = fold_batch(states, events)
    created, deleted = touched.created, touched.deleted
    registers = {(False, t, u) for t, u in touched.reads} | {(True, t, u) for t, u in touched.pins}

    await conn.execute(_STAGING)
    # Empty even within one transaction: after a poison event is isolated (savepoints), an
    # earlier successful part of the same chunk has left its rows here.
    await conn.execute("TRUNCATE bulk_threads, bulk_messages, bulk_registers, bulk_previews")
    cur = conn.cursor()
    async with cur.copy("COPY bulk_threads FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_THREADS)
        for tid in tids:
            s = states[tid]
            st = s.started
            started = (
                (st.client_id, st.client_name, st.client_avatar, st.provider_id, st.provider_name,
                 st.provider_business_name, st.provider_avatar, st.service_type, st.created_at)
                if st is not None
                else (None,) * 9
            )
            await copy.write_row(
                (tid, *started, s.state[1] if s.state else None, s.state[0] if s.state else None, s.paid_by_payment)
            )
    async with cur.copy("COPY bulk_messages FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_MESSAGES)
        for key, p in created.items():
            m = states[key[0]].messages[key[1]]
            args = dumps(m.preview_args).decode() if m.preview_args is not None else None
            await copy.write_row(
                (key[0], key[1], m.created_at, m.sender_id, m.sender_type, m.visible_to, m.system_key,
                 m.deleted, m.preview, m.preview_key, args, message_item(p))
            )
        for tid, mid in deleted - created.keys():
            await copy.write_row((tid, mid, None, None, None, None, None, True, None, None, None, None))
    async with cur.copy("COPY bulk_registers FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_REGISTERS)
        for pin, tid, uid in registers:
            if pin:
                at, value = states[tid].pins[uid]
                await copy.write_row((True, tid, uid, at, None, value))
            else:
                at, up_to = states[tid].reads[uid]
                await copy.write_row((False, tid, uid, at, up_to, None))
    async with cur.copy("COPY bulk_previews FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_PREVIEWS)
        for tid in tids:
            for row in render(states[tid]):
                await copy.write_row(
                    (row.user_id, row.thread_id, row.role, row.listed, row.last_ts, row.unread_count, dumps(row.item))
                )
    for statement in _UPSERTS:
        await conn.execute(statement)
    await write_user_avatars(conn, starts(states, unstarted))


async def finish(conn: psycopg.AsyncConnection) -> None:
    """Derive the per-viewer tables from ``thread_previews`` (idempotent)."""
    await conn.execute("TRUNCATE thread_summaries, viewer_versions")
    await conn.execute(
        "INSERT INTO thread_summaries (user_id, role, unread_total, thread_count) "
        "SELECT user_id, role, sum(unread_count), count(*) FROM thread_previews WHERE listed GROUP BY user_id, role"
    )
    await conn.execute(
        "INSERT INTO viewer_versions (user_id, version) SELECT user_id, 1 FROM thread_previews GROUP BY user_id"
    )


BULK = BulkLoad(apply=apply, finish=finish, cached=cached)
