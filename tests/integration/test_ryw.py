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
