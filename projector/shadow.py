"""Shadow tables: a projection's next version, built in a PostgreSQL schema of its own.

Schemas, for projection ``<name>``:

- ``rs_build_<name>``  the version being built (rebuild) or brought forward (rollback);
- ``rs_prev_<name>``   the version the last cutover replaced, kept for ``readside rollback``.

Each holds the projection's tables — created by the projection's own DDL run with
``search_path`` set to the schema, so the DDL and ``apply`` must use unqualified names (checked:
every table of ``Projection.tables`` must land in the schema) — plus the build's bookkeeping:

- ``rs_checkpoints (topic, partition) -> next_offset``  how far the tables have read; committed
  with the rows of every batch, so an interrupted build resumes from there;
- ``rs_seen (event_id)``  every event id applied to these tables (dedupe: first wins);
- ``rs_failed``  events the fold raised on (isolated like the live engine does; their ids are not
  kept in ``rs_seen``) and records today's decoder rejects; they become dead letters of the
  projection when this version goes live.

While the bulk load runs, the tables keep only their primary keys: ``create`` records the
definitions of the other indexes (``pg_get_indexdef``, schema-qualified) and drops them;
``build_indexes`` creates them again. Index names are per schema, so the live tables' indexes of
the same names do not collide.

``swap`` is the cutover's table move: ``ALTER TABLE … SET SCHEMA`` of the live tables into the
outgoing schema and of the shadow's into ``public``, with the bookkeeping moving along with the
outgoing version (its checkpoints equal the live ones at that instant). It takes the ACCESS
EXCLUSIVE locks first, each attempt bounded by a lock timeout shorter than PostgreSQL's
``deadlock_timeout``: a reader holding one table while waiting for another never deadlocks with
the cutover — the cutover gives way and tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
import psycopg
from psycopg import sql

from readside.projector import bookkeeping
from readside.readmodels.base import Projection
from readside.shared.errors import ReadsideError

__all__ = ["Shadow", "build_schema", "prev_schema"]

log = logging.getLogger(__name__)
LOCK_DEADLINE = 30.0  # seconds the cutover may hold the live projector while it waits for the tables

BOOKKEEPING = ("rs_checkpoints", "rs_seen", "rs_failed")


def build_schema(name: str) -> str:
    return f"rs_build_{name}"


def prev_schema(name: str) -> str:
    return f"rs_prev_{name}"


def _event_id(value: bytes) -> str | None:
    try:
        envelope = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    event_id = envelope.get("event_id") if isinstance(envelope, dict) else None
    return event_id if isinstance(event_id, str) else None


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(values: list[str]) -> str:
    """One-column COPY text of ``values``, in one piece (a ``write_row`` per id cost more than
    the database's insert). Event ids hold no control character (the decoder's check), so
    escaping is rarely needed: only a backslash, or what the text format reserves."""
    text = "\n".join(values)
    if "\\" in text or "\t" in text or "\r" in text or text.count("\n") != len(values) - 1:
        text = "\n".join(v.translate(_COPY_ESCAPES) for v in values)
    return text + "\n"  # str: psycopg encodes it in the connection's encoding


def _ident(*parts: str) -> sql.Identifier:
    return sql.Identifier(*parts)


class Shadow:
    """The tables of one version of ``projection`` in ``schema``."""

    def __init__(self, projection: Projection, schema: str) -> None:
        self.projection = projection
        self.schema = schema

    def table(self, name: str) -> sql.Identifier:
        return _ident(self.schema, name)

    async def exists(self, conn: psycopg.AsyncConnection) -> bool:
        cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,))
        return await cur.fetchone() is not None

    async def create(self, conn: psycopg.AsyncConnection, positions: dict[tuple[str, int], int]) -> list[str]:
        """In the caller's transaction: the schema, the projection's tables with their primary keys
        only, and the bookkeeping at ``positions``. Returns the dropped index definitions."""
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(_ident(self.schema)))
        await conn.execute(sql.SQL("SET LOCAL search_path = {}").format(_ident(self.schema)))
        await conn.execute(self.projection.ddl)
        await conn.execute("RESET search_path")  # SET LOCAL lasts to the end of the transaction otherwise
        missing = [t for t in self.projection.tables if not await self._has(conn, t)]
        if missing:
            raise RuntimeError(
                f"projection {self.projection.name}: its DDL did not create {missing} in schema {self.schema}; "
                "a projection's DDL and apply must use unqualified table names"
            )
        await conn.execute(
            sql.SQL(
                'CREATE TABLE {} (topic text COLLATE "C" NOT NULL, partition int4 NOT NULL, '
                "next_offset int8 NOT NULL, PRIMARY KEY (topic, partition));"
                'CREATE TABLE {} (event_id text COLLATE "C" PRIMARY KEY);'
                'CREATE TABLE {} (topic text COLLATE "C" NOT NULL, partition int4 NOT NULL, "offset" int8 NOT NULL, '
                "key bytea, value bytea, reason text NOT NULL, PRIMARY KEY (topic, partition, \"offset\"))"
            ).format(*(self.table(t) for t in BOOKKEEPING))
        )
        await self.set_positions(conn, positions)
        cur = await conn.execute(
            "SELECT ci.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "JOIN pg_class ci ON ci.oid = i.indexrelid JOIN pg_class ct ON ct.oid = i.indrelid "
            "JOIN pg_namespace n ON n.oid = ct.relnamespace "
            "WHERE n.nspname = %s AND ct.relname = ANY(%s) "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) ORDER BY ci.relname",
            (self.schema, list(self.projection.tables)),
        )
        indexes = await cur.fetchall()
        for name, _ in indexes:
            await conn.execute(sql.SQL("DROP INDEX {}").format(self.table(name)))
        return [definition for _, definition in indexes]

    async def add_missing_tables(self, conn: psycopg.AsyncConnection) -> list[str]:
        """In the caller's transaction: create, empty, the projection's tables this schema lacks
        (a version kept from before they were added), with the projection's own DDL — tables and
        indexes that exist are left as they are. Returns the tables created."""
        missing = [t for t in self.projection.tables if not await self._has(conn, t)]
        if missing:
            await conn.execute(sql.SQL("SET LOCAL search_path = {}").format(_ident(self.schema)))
            await conn.execute(self.projection.ddl)
            await conn.execute("RESET search_path")
        return missing

    async def _has(self, conn: psycopg.AsyncConnection, table: str) -> bool:
        cur = await conn.execute("SELECT to_regclass(%s)", (f'"{self.schema}"."{table}"',))
        row = await cur.fetchone()
        return row is not None and row[0] is not None

    async def build_indexes(self, conn: psycopg.AsyncConnection, definitions: list[str]) -> None:
        for definition in definitions:
            await conn.execute(definition.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1))
        for table in self.projection.tables:
            await conn.execute(sql.SQL("ANALYZE {}").format(self.table(table)))

    # -- bookkeeping -----------------------------------------------------------------------
    async def positions(self, conn: psycopg.AsyncConnection) -> dict[tuple[str, int], int]:
        cur = await conn.execute(sql.SQL("SELECT topic, partition, next_offset FROM {}").format(self.table("rs_checkpoints")))
        return {(t, p): o for t, p, o in await cur.fetchall()}

    async def set_positions(self, conn: psycopg.AsyncConnection, positions: dict[tuple[str, int], int]) -> None:
        if not positions:
            return
        keys = sorted(positions)
        await conn.execute(
            sql.SQL(
                "INSERT INTO {} (topic, partition, next_offset) SELECT * FROM unnest(%s::text[], %s::int4[], %s::int8[]) "
                "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset"
            ).format(self.table("rs_checkpoints")),
            ([t for t, _ in keys], [p for _, p in keys], [positions[k] for k in keys]),
        )

    async def first_seen(self, conn: psycopg.AsyncConnection, event_ids: list[str]) -> set[str]:
        """Record ``event_ids`` as applied; returns those not recorded before (first wins)."""
        if not event_ids:
            return set()
        await conn.execute("CREATE TEMP TABLE IF NOT EXISTS rs_batch_ids (event_id text) ON COMMIT DELETE ROWS")
        await conn.execute("TRUNCATE rs_batch_ids")
        async with conn.cursor().copy("COPY rs_batch_ids FROM STDIN") as copy:
            await copy.write(_copy_text(event_ids))
        cur = await conn.execute(
            # in id order: concurrent workers never wait on each other in a cycle
            sql.SQL(
                "INSERT INTO {} SELECT event_id FROM rs_batch_ids ORDER BY event_id ON CONFLICT DO NOTHING RETURNING event_id"
            ).format(
                self.table("rs_seen")
            )
        )
        return {row[0] for row in await cur.fetchall()}

    async def forget_seen(self, conn: psycopg.AsyncConnection, event_ids: list[str]) -> None:
        if event_ids:
            await conn.execute(
                sql.SQL("DELETE FROM {} WHERE event_id = ANY(%s::text[])").format(self.table("rs_seen")), (event_ids,)
            )

    async def record_failures(
        self, conn: psycopg.AsyncConnection, failures: list[tuple[str, int, int, bytes | None, bytes | None, str]]
    ) -> None:
        """Keep ``(topic, partition, offset, key, value, reason)``; value None is a tombstone."""
        if any(value is None for *_, value, _ in failures):
            # a shadow created by an earlier version has value NOT NULL: lift it (once, catalog only)
            cur = await conn.execute(
                "SELECT attnotnull FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'value'",
                (f'"{self.schema}"."rs_failed"',),
            )
            row = await cur.fetchone()
            if row is not None and row[0]:
                await conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN value DROP NOT NULL").format(self.table("rs_failed")))
        if failures:
            await conn.cursor().executemany(
                sql.SQL(
                    'INSERT INTO {} (topic, partition, "offset", key, value, reason) VALUES (%s, %s, %s, %s, %s, %s) '
                    "ON CONFLICT DO NOTHING"
                ).format(self.table("rs_failed")),
                failures,
            )

    async def failures(self, conn: psycopg.AsyncConnection) -> int:
        cur = await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self.table("rs_failed")))
        return (await cur.fetchone())[0]  # type: ignore[index]

    # -- cutover ---------------------------------------------------------------------------
    async def lock_for_swap(
        self, conn: psycopg.AsyncConnection, *, attempt_timeout_ms: int, deadline: float | None = None
    ) -> int:
        """ACCESS EXCLUSIVE on the live and the shadow tables, retried until granted or until
        ``deadline`` seconds have passed; in the caller's transaction. Returns the number of attempts.

        The caller holds the live checkpoint rows meanwhile, so the live projector waits: past the
        deadline this gives up (the caller's transaction rolls back and frees it) and names the
        sessions that hold the tables."""
        live = [_ident("public", t) for t in self.projection.tables]
        names = live + [self.table(t) for t in self.projection.tables]
        statement = sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.SQL(", ").join(names))
        attempts = 0
        deadline = LOCK_DEADLINE if deadline is None else deadline
        give_up = time.monotonic() + deadline
        while True:
            attempts += 1
            try:
                async with conn.transaction():  # a savepoint: a timed-out attempt leaves no lock behind
                    await conn.execute(f"SET LOCAL lock_timeout = {attempt_timeout_ms}")
                    await conn.execute(statement)
                await conn.execute("SET LOCAL lock_timeout = 0")  # the locks are held: nothing else waits
                return attempts
            except psycopg.errors.LockNotAvailable:
                log.info("%s: tables busy (attempt %d); trying again", self.projection.name, attempts)
                if time.monotonic() >= give_up:
                    holders = await self._holders(conn, [f"public.{t}" for t in self.projection.tables])
                    raise ReadsideError(
                        f"{self.projection.name}: could not lock the live tables for the cutover in {deadline:.0f} s "
                        f"({attempts} attempts); held by {holders or 'sessions that have since ended'}. "
                        f"Nothing was swapped and the live projector goes on; end those sessions (or wait) and run "
                        f"the same command again: it resumes at the catch-up"
                    ) from None
                await asyncio.sleep(min(0.05 * attempts, 0.5))

    @staticmethod
    async def _holders(conn: psycopg.AsyncConnection, tables: list[str]) -> str:
        cur = await conn.execute(
            "SELECT DISTINCT a.pid, a.state, left(regexp_replace(a.query, '\\s+', ' ', 'g'), 80) "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.relation = ANY(%s::regclass[]) AND l.pid <> pg_backend_pid() ORDER BY a.pid",
            (tables,),
        )
        return "; ".join(f"pid {pid} ({state}: {query})" for pid, state, query in await cur.fetchall())

    async def swap(self, conn: psycopg.AsyncConnection, outgoing: str) -> None:
        """Live tables -> ``outgoing`` (created), shadow tables -> public, bookkeeping -> ``outgoing``
        (its checkpoints and seen ids equal the live ones now); the shadow's fold failures become
        dead letters of the projection; the emptied shadow schema is dropped. In the caller's
        transaction, after ``lock_for_swap``."""
        await bookkeeping.dead_letters_from(conn, self.projection.name, self.table("rs_failed"))
        # An event the new version's fold failed on is not "seen" by it, whatever the replaced
        # version did (applied it, or had it replayed from the dead letters meanwhile): forget it in
        # the projection's dedupe, so `readside dlq replay` applies it to the new tables after a fix
        # instead of discarding it as a duplicate.
        # The event ids are read in Python: a value PostgreSQL's jsonb cannot hold (a "\u0000" —
        # which may be why the fold failed) must not fail the cutover.
        cur = await conn.execute(
            sql.SQL("SELECT value FROM {} WHERE left(reason, 10) = 'fold error' AND value IS NOT NULL").format(
                self.table("rs_failed")
            )
        )
        failed = [_event_id(bytes(value)) for (value,) in await cur.fetchall()]
        await bookkeeping.forget_seen(conn, self.projection.name, [e for e in failed if e is not None])
        await conn.execute(sql.SQL("TRUNCATE {}").format(self.table("rs_failed")))
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(_ident(outgoing)))
        for table in self.projection.tables:
            await conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(_ident("public", table), _ident(outgoing)))
            await conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA public").format(self.table(table)))
        for table in BOOKKEEPING:
            await conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(self.table(table), _ident(outgoing)))
        await conn.execute(sql.SQL("DROP SCHEMA {}").format(_ident(self.schema)))  # RESTRICT: must be empty

    async def drop(self, conn: psycopg.AsyncConnection) -> None:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(_ident(self.schema)))

    async def rename(self, conn: psycopg.AsyncConnection, to: str) -> Shadow:
        await conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(_ident(self.schema), _ident(to)))
        return Shadow(self.projection, to)
