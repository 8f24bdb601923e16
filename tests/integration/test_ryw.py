"""Read-your-writes (api/ryw.py) when two read models read one topic: a request waits for the
checkpoint of its own endpoint's read model, never for another's that happens to be ahead."""

from __future__ import annotations

import asyncio

import psycopg

from readside.api.ryw import Watcher
from readside.shared.db import migrate, open_pool

TOPIC = "shared.events"


async def _checkpoint(conn: psycopg.AsyncConnection, projection: str, offset: int) -> None:
    await conn.execute(
        "INSERT INTO checkpoints (projection, topic, partition, next_offset) VALUES (%s, %s, 0, %s) "
        "ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
        (projection, TOPIC, offset),
    )


def test_a_wait_follows_its_own_read_models_checkpoint_on_a_shared_topic(db_url: str) -> None:
    migrate(db_url, [])

    async def go() -> None:
        pool = await open_pool(db_url, max_size=2)
        watcher = Watcher(pool, None, max_waiters=10, poll=0.01)
        try:
            async with pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO partition_heads (topic, partition, high_watermark) VALUES (%s, 0, 100)", (TOPIC,)
                )
                await _checkpoint(conn, "ahead", 50)  # applied offsets 0..49
                await _checkpoint(conn, "behind", 5)  # applied offsets 0..4
            position = [(TOPIC, 0, 20)]
            assert await watcher.wait("ahead", position, timeout=2.0)
            assert not await watcher.wait("behind", position, timeout=0.3)
            # "behind" catches up while its request waits: the wait ends then, not before
            waiting = asyncio.create_task(watcher.wait("behind", position, timeout=5.0))
            await asyncio.sleep(0.1)
            assert not waiting.done()
            async with pool.connection() as conn:
                await _checkpoint(conn, "behind", 21)
            assert await waiting
            # a read model with no checkpoint on the topic has applied nothing of it
            assert not await watcher.wait("other", position, timeout=0.2)
        finally:
            await watcher.close()
            await pool.close()

    asyncio.run(go())


def test_the_wal_position_for_read_replicas_covers_the_commit_that_applied_the_offset(db_url: str) -> None:
    """With read replicas (``wal=True``): an offset below the checkpoint's ``wal_covers`` was applied
    by a commit before its ``wal_lsn``; an offset of the latest batch gets the primary's insert
    position read by the poll itself, past every commit the poll saw."""
    migrate(db_url, [])

    async def go() -> None:
        pool = await open_pool(db_url, max_size=2)
        watcher = Watcher(pool, None, max_waiters=10, poll=0.01, wal=True)
        try:
            async with pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO partition_heads (topic, partition, high_watermark) VALUES (%s, 0, 100)", (TOPIC,)
                )
                await _checkpoint(conn, "ahead", 50)
                await conn.execute("UPDATE checkpoints SET wal_covers = 40, wal_lsn = '0/1234' WHERE projection = 'ahead'")
                before = (await (await conn.execute("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8")).fetchone())[0]
            assert await watcher.wait_wal("ahead", [(TOPIC, 0, 39)], timeout=2.0) == (True, 0x1234)
            caught, wal = await watcher.wait_wal("ahead", [(TOPIC, 0, 39), (TOPIC, 0, 40)], timeout=2.0)
            assert caught and wal is not None and wal >= before
            assert await watcher.wait_wal("ahead", [(TOPIC, 0, 50)], timeout=0.2) == (False, None)
        finally:
            await watcher.close()
            await pool.close()

    asyncio.run(go())
