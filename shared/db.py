"""PostgreSQL plumbing: pools, the engine's own tables, migrations.

The engine's tables (checkpoints, dedupe, dead letters, partition heads, projection state) live
here; each read model brings its own DDL in its projection module. Every statement is
idempotent, so ``migrate`` can run at every start.
"""

from __future__ import annotations

import logging
import select
import time
import weakref
from collections.abc import Iterable

import psycopg
from psycopg_pool import AsyncConnectionPool

__all__ = ["CORE_DDL", "connect", "migrate", "open_pool"]

log = logging.getLogger(__name__)

CORE_DDL = """
CREATE TABLE IF NOT EXISTS checkpoints (
    projection  text COLLATE "C" NOT NULL,
    topic       text COLLATE "C" NOT NULL,
    partition   int4 NOT NULL,
    next_offset int8 NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    wal_covers  int8 NOT NULL DEFAULT 0,
    wal_lsn     pg_lsn,
    PRIMARY KEY (projection, topic, partition)
);
-- Read replicas (api/replicas.py): a server that has replayed the WAL up to wal_lsn has applied
-- every offset below wal_covers (set by the statement that advances the checkpoint). Added to
-- tables created before; checked first, so a start takes no ACCESS EXCLUSIVE lock on this hot table.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'checkpoints'::regclass AND attname = 'wal_lsn' AND NOT attisdropped) THEN
        ALTER TABLE checkpoints ADD COLUMN IF NOT EXISTS wal_covers int8 NOT NULL DEFAULT 0,
                                ADD COLUMN IF NOT EXISTS wal_lsn pg_lsn;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS dedupe (
    projection text COLLATE "C" NOT NULL,
    event_id   text COLLATE "C" NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, event_id)
);
CREATE INDEX IF NOT EXISTS dedupe_seen_at ON dedupe (seen_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    id          bigserial PRIMARY KEY,
    projection  text COLLATE "C" NOT NULL,
    topic       text COLLATE "C" NOT NULL,
    partition   int4 NOT NULL,
    "offset"    int8 NOT NULL,
    key         bytea,
    value       bytea,
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retries     int4 NOT NULL DEFAULT 0,
    retried_at  timestamptz,
    UNIQUE (projection, topic, partition, "offset")
);
-- `readside dlq replay` counts its attempts (tables created before it get the columns here)
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS retries int4 NOT NULL DEFAULT 0;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS retried_at timestamptz;
-- A tombstone (a record without a value) is dead-lettered with value NULL (tables created
-- before had NOT NULL; checked first, so a start takes no ACCESS EXCLUSIVE lock for nothing).
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'dead_letters'::regclass AND attname = 'value' AND attnotnull) THEN
        ALTER TABLE dead_letters ALTER COLUMN value DROP NOT NULL;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS partition_heads (
    topic          text COLLATE "C" NOT NULL,
    partition      int4 NOT NULL,
    high_watermark int8 NOT NULL,
    observed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS projections (
    name            text COLLATE "C" PRIMARY KEY,
    version         int4 NOT NULL,
    state           text NOT NULL DEFAULT 'live',
    skipped_unknown int8 NOT NULL DEFAULT 0,
    last_batch_at   timestamptz
);
-- Rebuild and replay (projector/rebuild.py): the version live in public, the one kept in
-- rs_prev_<name> for rollback, and a generation bumped at every cutover (cache namespace, ETags).
ALTER TABLE projections ADD COLUMN IF NOT EXISTS previous_version int4;
ALTER TABLE projections ADD COLUMN IF NOT EXISTS generation int8 NOT NULL DEFAULT 1;
-- The invalidation outbox (projector/outbox.py): the cache scopes a batch changed, written in the
-- batch's transaction, deleted once their version bump reached Redis.
CREATE TABLE IF NOT EXISTS cache_outbox (
    id         uuid PRIMARY KEY,
    projection text COLLATE "C" NOT NULL,
    scopes     text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS rebuilds (
    projection     text COLLATE "C" PRIMARY KEY,
    kind           text NOT NULL DEFAULT 'rebuild',
    target_version int4 NOT NULL,
    phase          text NOT NULL,
    positions      jsonb NOT NULL DEFAULT '{}',
    targets        jsonb NOT NULL DEFAULT '{}',
    events_done    int8 NOT NULL DEFAULT 0,
    events_total   int8 NOT NULL DEFAULT 0,
    indexes        text[] NOT NULL DEFAULT '{}',
    message        text,
    started_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
"""


def connect(url: str, **kwargs: object) -> psycopg.Connection:
    """A synchronous connection whose session speaks UTC (as every pooled one does)."""
    return psycopg.connect(url, options="-c TimeZone=UTC", **kwargs)  # type: ignore[arg-type]


# Every pooled session runs with JIT off: the projector's and the API's statements are many short
# index lookups whose estimated cost still crosses ``jit_above_cost`` as the tables grow (a batch's
# previews statement, ~2k index descents, was estimated at 0.4-2M), and compiling them took 0.5-1.5 s
# per statement for a 20-60 ms execution.
POOL_OPTIONS = "-c TimeZone=UTC -c jit=off"

# A connection given back less than this many seconds ago, with nothing to read, is handed out
# again unchecked: it answered then, and under load the check (an empty query: one round trip per
# checkout) would cost as much as the request's own statement. One idle longer, or one the server
# wrote to while it sat in the pool (a terminated backend, a restart: the server's goodbye), is
# checked on checkout, so a restarted database heals; the pool replaces one that fails its check.
RECHECK_AFTER = 1.0


def _readable(conn: psycopg.AsyncConnection) -> bool:
    """Whether an idle connection has something to read (a pooled one should have nothing)."""
    try:
        return bool(select.select([conn.fileno()], [], [], 0)[0])
    except (OSError, ValueError, psycopg.Error):
        return True


class _Pool(AsyncConnectionPool):
    """The pool of ``open_pool``: it notes when each connection was given back, in ``putconn``
    itself. (A ``reset`` callback would do the same, but any ``reset`` makes the pool hand every
    returned connection to a worker task: ~10% of the API's CPU on a PostgreSQL-served request.)"""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.returned: weakref.WeakKeyDictionary[psycopg.AsyncConnection, float] = weakref.WeakKeyDictionary()
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    async def putconn(self, conn: psycopg.AsyncConnection) -> None:
        self.returned[conn] = time.monotonic()
        await super().putconn(conn)


async def open_pool(url: str, *, min_size: int = 1, max_size: int = 4, timeout: float = 5.0) -> AsyncConnectionPool:
    """An open async pool; connections are checked on checkout unless just given back (``RECHECK_AFTER``)."""

    async def check(conn: psycopg.AsyncConnection) -> None:
        if time.monotonic() - pool.returned.get(conn, float("-inf")) > RECHECK_AFTER or _readable(conn):
            await AsyncConnectionPool.check_connection(conn)

    pool = _Pool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        open=False,
        check=check,
        kwargs={"autocommit": True, "options": POOL_OPTIONS},
    )
    await pool.open(wait=False)
    return pool


def migrate(url: str, projections: Iterable[object]) -> None:
    """Create the engine's tables and every projection's tables (idempotent)."""
    with psycopg.connect(url, autocommit=True) as conn:
        # One migration at a time, whoever runs it (demo, projector and API may start together).
        conn.execute("SELECT pg_advisory_lock(727001)")
        try:
            conn.execute(CORE_DDL)
            for projection in projections:
                conn.execute(projection.ddl)  # type: ignore[attr-defined]
                conn.execute(
                    "INSERT INTO projections (name, version) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO NOTHING",
                    (projection.name, projection.version),  # type: ignore[attr-defined]
                )
        finally:
            conn.execute("SELECT pg_advisory_unlock(727001)")
    log.info("migrated %s", url.split("@")[-1])
