"""Every statement on the engine's own tables, in one place.

The tables (created by ``readside.shared.db.CORE_DDL`` and ``migrate``) live in ``public``, and
every statement here names them so: a rebuild moves ``search_path`` to its shadow schema while
it writes, and the projections' tables change schema at a cutover, but these never do.

- ``checkpoints (projection, topic, partition) -> next_offset``: where each projection resumes;
  advanced with every batch, conditionally on where the batch started (fencing);
- ``dedupe (projection, event_id)``: the events a projection applied (first wins);
- ``projections``: version, state (``live`` | ``rebuilding``), generation, counters;
- ``rebuilds``: one row per projection, the phase a rebuild or rollback reached;
- ``partition_heads``: the high watermarks the projector saw with its last batches;
- ``dead_letters``: the records a projection could not apply.

Functions take a connection and run in the caller's transaction. The read side of the API
(read-your-writes, lag) has its own queries on these tables: it may not import the engine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from readside.shared.errors import FencedError

__all__ = [
    "DEAD_LETTER_COLUMNS", "DEDUPE", "Key", "advance_checkpoints", "begin_rebuild", "cancel_rebuild", "claim_dead_letters",
    "count_dead_letters", "cut_over", "dead_letter_ids", "dead_letters_from", "delete_dead_letters", "first_seen",
    "forget_previous_version", "forget_seen", "get_dead_letter", "insert_dead_letters", "list_dead_letters",
    "live_checkpoints", "mark_interrupted", "move_checkpoints", "purge_seen", "rebuild_row", "record_batch", "record_heads",
    "report_rebuild", "retry_dead_letters", "seed_checkpoints", "set_rebuild_phase", "set_rebuild_targets",
    "set_state", "status_rows", "versions",
]

Key = tuple[str, int]  # (topic, partition)
Conn = psycopg.AsyncConnection

DEDUPE = "public.dedupe"  # every projection's seen event ids (first_seen, forget_seen, purge_seen)
DEAD_LETTER_COLUMNS = 'id, projection, topic, partition, "offset", key, value, reason, created_at, retries, retried_at'


# -- checkpoints ---------------------------------------------------------------------------------

async def seed_checkpoints(conn: Conn, projection: str, keys: Sequence[Key]) -> list[tuple[str, int, int]]:
    """The checkpoints of ``keys``, created at offset 0 where there were none."""
    topics, parts = [t for t, _ in keys], [p for _, p in keys]
    await conn.execute(
        "INSERT INTO public.checkpoints (projection, topic, partition) "
        "SELECT %s, t, p FROM unnest(%b::text[], %b::int4[]) AS u(t, p) ON CONFLICT DO NOTHING",
        (projection, topics, parts),
    )
    cur = await conn.execute(
        "SELECT topic, partition, next_offset FROM public.checkpoints "
        "WHERE projection = %s AND (topic, partition) IN (SELECT * FROM unnest(%b::text[], %b::int4[]))",
        (projection, topics, parts),
    )
    return list(await cur.fetchall())


async def advance_checkpoints(conn: Conn, projection: str, ranges: dict[Key, tuple[int, int]]) -> None:
    """Move each checkpoint from ``start`` to ``end`` (``ranges[key] = (start, end)``); raises
    :class:`FencedError` when one is no longer at ``start`` (another instance moved it)."""
    await (await move_checkpoints(conn, projection, ranges))()


async def move_checkpoints(
    conn: Conn, projection: str, ranges: dict[Key, tuple[int, int]]
) -> Callable[[], Awaitable[None]]:
    """:func:`advance_checkpoints` in two steps: the statement is sent now, the returned check
    (raises :class:`FencedError`) reads its answer — in pipeline mode, with the next statement's.

    Beside each checkpoint, for read replicas (``api/replicas.py``): ``wal_lsn``, the WAL insert
    position now, and ``wal_covers = start``. The row this statement updates was committed at
    ``start`` by an earlier transaction, whose commit record is therefore already in the WAL below
    this position: a replica that has replayed up to ``wal_lsn`` has applied every offset below
    ``start``. (This batch's own commit record comes after ``wal_lsn``: no position read inside
    the transaction can vouch for it.)"""
    keys = list(ranges)
    cur = await conn.execute(
        "WITH moved AS (UPDATE public.checkpoints c SET next_offset = u.new, updated_at = now(), "
        "wal_covers = u.old, wal_lsn = pg_current_wal_insert_lsn() "
        "FROM unnest(%b::text[], %b::int4[], %b::int8[], %b::int8[]) AS u(topic, part, old, new) "
        "WHERE c.projection = %s AND c.topic = u.topic AND c.partition = u.part AND c.next_offset = u.old "
        "RETURNING 1) SELECT count(*) FROM moved",
        ([k[0] for k in keys], [k[1] for k in keys], [ranges[k][0] for k in keys], [ranges[k][1] for k in keys], projection),
    )

    async def check() -> None:
        row = await cur.fetchone()
        if row is None or row[0] != len(keys):
            raise FencedError(f"{projection}: checkpoint moved under this batch (rebalance); rolling back")

    return check


async def live_checkpoints(conn: Conn, projection: str, *, lock: bool = False) -> dict[Key, int]:
    """The projection's checkpoints; ``lock``: ``FOR UPDATE`` (holds the live projector's next commit)."""
    cur = await conn.execute(
        "SELECT topic, partition, next_offset FROM public.checkpoints WHERE projection = %s "
        "ORDER BY topic, partition" + (" FOR UPDATE" if lock else ""),
        (projection,),
    )
    return {(t, p): o for t, p, o in await cur.fetchall()}


# -- dedupe --------------------------------------------------------------------------------------

async def first_seen(conn: Conn, projection: str, event_ids: Iterable[str]) -> set[str]:
    """Record ``event_ids`` as applied by ``projection``; returns those not recorded before."""
    ids = sorted(event_ids)
    if not ids:
        return set()
    cur = await conn.execute(
        "INSERT INTO public.dedupe (projection, event_id) SELECT %s, unnest(%b::text[]) "
        "ON CONFLICT DO NOTHING RETURNING event_id",
        (projection, ids),
    )
    return {row[0] for row in await cur.fetchall()}


async def forget_seen(conn: Conn, projection: str, event_ids: Sequence[str]) -> None:
    if event_ids:
        await conn.execute(
            "DELETE FROM public.dedupe WHERE projection = %s AND event_id = ANY(%b::text[])", (projection, list(event_ids))
        )


async def purge_seen(conn: Conn, projection: str, days: int) -> None:
    """Forget the ids seen more than ``days`` ago (a producer re-sends within minutes, not weeks)."""
    await conn.execute(
        "DELETE FROM public.dedupe WHERE projection = %s AND seen_at < now() - make_interval(days => %s)", (projection, days)
    )


# -- projections and partition heads -------------------------------------------------------------

async def record_batch(conn: Conn, projection: str, skipped: int) -> None:
    await conn.execute(
        "UPDATE public.projections SET skipped_unknown = skipped_unknown + %s, last_batch_at = now() WHERE name = %s",
        (skipped, projection),
    )


async def record_heads(conn: Conn, heads: dict[Key, int]) -> None:
    """High watermarks seen; a head never moves back."""
    if heads:
        keys = list(heads)
        await conn.execute(
            "INSERT INTO public.partition_heads (topic, partition, high_watermark) "
            "SELECT * FROM unnest(%b::text[], %b::int4[], %b::int8[]) "
            "ON CONFLICT (topic, partition) DO UPDATE SET "
            "high_watermark = GREATEST(partition_heads.high_watermark, excluded.high_watermark), observed_at = now()",
            ([k[0] for k in keys], [k[1] for k in keys], [heads[k] for k in keys]),
        )


async def set_state(conn: Conn, projection: str, state: str, *, only_from: str | None = None) -> None:
    """``projections.state`` (``live`` | ``rebuilding``); with ``only_from``, only from that state."""
    await conn.execute(
        "UPDATE public.projections SET state = %s WHERE name = %s AND (%s::text IS NULL OR state = %s)",
        (state, projection, only_from, only_from),
    )


async def versions(conn: Conn, projection: str) -> tuple[int, int | None, int]:
    """(version, previous_version, generation)."""
    cur = await conn.execute(
        "SELECT version, previous_version, generation FROM public.projections WHERE name = %s", (projection,)
    )
    row = await cur.fetchone()
    assert row is not None, "migrate inserts every projection"
    return row[0], row[1], row[2]


async def forget_previous_version(conn: Conn, projection: str) -> None:
    await conn.execute("UPDATE public.projections SET previous_version = NULL WHERE name = %s", (projection,))


async def cut_over(conn: Conn, projection: str, target_version: int) -> int:
    """The projection is at ``target_version`` now, live, under a new generation (returned)."""
    cur = await conn.execute(
        "UPDATE public.projections SET previous_version = version, version = %s, generation = generation + 1, "
        "state = 'live' WHERE name = %s RETURNING generation",
        (target_version, projection),
    )
    (generation,) = await cur.fetchone()  # type: ignore[misc]
    return generation


async def status_rows(conn: Conn, names: Sequence[str] | None) -> tuple[list[tuple[Any, ...]], ...]:
    """For ``readside status``: projections (all, or ``names``), checkpoints with their age in
    seconds, partition heads, dead letters per projection, unfinished rebuilds. No locks."""
    cur = await conn.execute(
        "SELECT name, version, state, skipped_unknown, last_batch_at FROM public.projections "
        "WHERE %(names)s::text[] IS NULL OR name = ANY(%(names)s::text[]) ORDER BY name",
        {"names": None if names is None else sorted(names)},
    )
    projections = await cur.fetchall()
    cur = await conn.execute(
        "SELECT projection, topic, partition, next_offset, updated_at, "
        "extract(epoch FROM now() - updated_at)::float8 FROM public.checkpoints"
    )
    checkpoints = await cur.fetchall()
    cur = await conn.execute("SELECT topic, partition, high_watermark FROM public.partition_heads")
    heads = await cur.fetchall()
    cur = await conn.execute("SELECT projection, count(*) FROM public.dead_letters GROUP BY projection")
    dead = await cur.fetchall()
    cur = await conn.execute(
        "SELECT projection, kind, target_version, phase, events_done, events_total, updated_at FROM public.rebuilds "
        "WHERE phase NOT IN ('done', 'cancelled')"
    )
    rebuilds = await cur.fetchall()
    return projections, checkpoints, heads, dead, rebuilds


# -- rebuilds ------------------------------------------------------------------------------------

async def rebuild_row(conn: Conn, projection: str) -> tuple[str, int, str, list[str]] | None:
    """(kind, target_version, phase, indexes) of the projection's rebuild row, if any."""
    cur = await conn.execute(
        "SELECT kind, target_version, phase, indexes FROM public.rebuilds WHERE projection = %s", (projection,)
    )
    row = await cur.fetchone()
    return None if row is None else (row[0], row[1], row[2], list(row[3]))


async def begin_rebuild(
    conn: Conn, projection: str, kind: str, target: int, phase: str, indexes: list[str], positions: str, done: int
) -> None:
    """A new rebuild (or rollback) row, replacing a finished one; the projection is ``rebuilding``."""
    await conn.execute(
        "INSERT INTO public.rebuilds (projection, kind, target_version, phase, indexes, positions, events_done) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (projection) DO UPDATE SET kind = excluded.kind, "
        "target_version = excluded.target_version, phase = excluded.phase, indexes = excluded.indexes, "
        "positions = excluded.positions, targets = '{}', events_done = excluded.events_done, events_total = 0, "
        "message = NULL, started_at = now(), updated_at = now()",
        (projection, kind, target, phase, indexes, positions, done),
    )
    await set_state(conn, projection, "rebuilding")


async def set_rebuild_phase(conn: Conn, projection: str, phase: str, message: str | None = None) -> None:
    await conn.execute(
        "UPDATE public.rebuilds SET phase = %s, message = %s, updated_at = now() WHERE projection = %s",
        (phase, message, projection),
    )


async def set_rebuild_targets(conn: Conn, projection: str, targets: str, total: int) -> None:
    await conn.execute(
        "UPDATE public.rebuilds SET targets = %s, events_total = %s, updated_at = now() WHERE projection = %s",
        (targets, total, projection),
    )


async def report_rebuild(conn: Conn, projection: str, positions: str, done: int, *, total: int | None = None,
                         phase: str | None = None) -> None:
    """Progress: ``positions`` (JSON) and events done; at the cutover also the targets (the same
    positions), the total and the next phase."""
    if phase is None:
        await conn.execute(
            "UPDATE public.rebuilds SET positions = %s, events_done = %s, updated_at = now() WHERE projection = %s",
            (positions, done, projection),
        )
    else:
        await conn.execute(
            "UPDATE public.rebuilds SET phase = %s, positions = %s, targets = %s, events_done = %s, "
            "events_total = %s, updated_at = now() WHERE projection = %s",
            (phase, positions, positions, done, total, projection),
        )


async def cancel_rebuild(conn: Conn, projection: str) -> None:
    await set_rebuild_phase(conn, projection, "cancelled")
    await set_state(conn, projection, "live")


async def mark_interrupted(conn: Conn, projection: str, message: str) -> None:
    """After Ctrl-C or SIGTERM: the projection is live (on its current tables), the row says how
    to resume."""
    await conn.execute(
        "UPDATE public.rebuilds SET message = %s, updated_at = now() WHERE projection = %s AND phase <> 'done'",
        (message, projection),
    )
    await set_state(conn, projection, "live", only_from="rebuilding")


# -- dead letters --------------------------------------------------------------------------------

async def insert_dead_letters(
    conn: Conn, projection: str, rows: Sequence[tuple[str, int, int, bytes | None, bytes | None, str]]
) -> dict[tuple[str, int, int], int]:
    """Keep ``(topic, partition, offset, key, value, reason)`` rows (value None: a tombstone); an
    origin already there keeps its first reason. Returns each origin's dead letter id."""
    cur = await conn.execute(
        'INSERT INTO public.dead_letters (projection, topic, partition, "offset", key, value, reason) '
        "SELECT %s, * FROM unnest(%b::text[], %b::int4[], %b::int8[], %b::bytea[], %b::bytea[], %b::text[]) "
        "ON CONFLICT (projection, topic, partition, \"offset\") DO UPDATE SET reason = dead_letters.reason "
        'RETURNING id, topic, partition, "offset"',
        (projection, *([row[i] for row in rows] for i in range(6))),
    )
    return {(t, p, o): i for i, t, p, o in await cur.fetchall()}


async def dead_letters_from(conn: Conn, projection: str, table: sql.Composable) -> None:
    """The rows of ``table`` (a shadow's ``rs_failed``) become dead letters of ``projection``;
    an origin already dead-lettered keeps its row."""
    await conn.execute(
        sql.SQL(
            'INSERT INTO public.dead_letters (projection, topic, partition, "offset", key, value, reason) '
            'SELECT %s, topic, partition, "offset", key, value, reason FROM {} ON CONFLICT DO NOTHING'
        ).format(table),
        (projection,),
    )


async def list_dead_letters(conn: Conn, projection: str | None, limit: int) -> tuple[list[tuple[Any, ...]], int]:
    """The newest ``limit`` rows (of one projection), and how many there are in all."""
    cur = await conn.execute(
        f"SELECT {DEAD_LETTER_COLUMNS} FROM public.dead_letters WHERE %(p)s::text IS NULL OR projection = %(p)s "
        "ORDER BY id DESC LIMIT %(n)s",
        {"p": projection, "n": limit},
    )
    rows = list(await cur.fetchall())
    return rows, await count_dead_letters(conn, projection)


async def count_dead_letters(conn: Conn, projection: str | None) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM public.dead_letters WHERE %(p)s::text IS NULL OR projection = %(p)s", {"p": projection}
    )
    (total,) = await cur.fetchone()  # type: ignore[misc]
    return total


async def get_dead_letter(conn: Conn, dead_letter_id: int) -> tuple[Any, ...] | None:
    cur = await conn.execute(f"SELECT {DEAD_LETTER_COLUMNS} FROM public.dead_letters WHERE id = %s", (dead_letter_id,))
    return await cur.fetchone()


async def dead_letter_ids(conn: Conn, ids: Sequence[int], projection: str | None) -> set[int]:
    """Which of ``ids`` exist (of one projection)."""
    cur = await conn.execute(
        "SELECT id FROM public.dead_letters WHERE id = ANY(%(ids)s) AND (%(p)s::text IS NULL OR projection = %(p)s)",
        {"ids": list(ids), "p": projection},
    )
    return {row[0] for row in await cur.fetchall()}


async def claim_dead_letters(
    conn: Conn, ids: Sequence[int] | None, after: int, projection: str | None, limit: int
) -> list[tuple[Any, ...]]:
    """Rows ``ids`` (or the next ``limit`` after id ``after``), ``FOR UPDATE SKIP LOCKED``: two
    replays never take one."""
    if ids is not None:
        cur = await conn.execute(
            f"SELECT {DEAD_LETTER_COLUMNS} FROM public.dead_letters WHERE id = ANY(%(ids)s) "
            "AND (%(p)s::text IS NULL OR projection = %(p)s) ORDER BY id FOR UPDATE SKIP LOCKED",
            {"ids": list(ids), "p": projection},
        )
    else:
        cur = await conn.execute(
            f"SELECT {DEAD_LETTER_COLUMNS} FROM public.dead_letters WHERE id > %(after)s "
            "AND (%(p)s::text IS NULL OR projection = %(p)s) ORDER BY id LIMIT %(n)s FOR UPDATE SKIP LOCKED",
            {"after": after, "p": projection, "n": limit},
        )
    return list(await cur.fetchall())


async def delete_dead_letters(conn: Conn, ids: Sequence[int]) -> None:
    if ids:
        await conn.execute("DELETE FROM public.dead_letters WHERE id = ANY(%b::int8[])", (list(ids),))


async def retry_dead_letters(conn: Conn, failing: Sequence[tuple[int, str]]) -> None:
    """Dead letters that failed again: their new reason, ``retries + 1``."""
    if failing:
        await conn.execute(
            "UPDATE public.dead_letters d SET reason = u.reason, retries = d.retries + 1, retried_at = now() "
            "FROM unnest(%b::int8[], %b::text[]) AS u(id, reason) WHERE d.id = u.id",
            ([i for i, _ in failing], [r for _, r in failing]),
        )
