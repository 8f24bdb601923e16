"""The API's and the projector's pool (``readside.shared.db.open_pool``): a connection just given
back is handed out again without a check round trip, and one whose backend the server ended while
it sat in the pool is checked and replaced, so the next statement still succeeds."""

from __future__ import annotations

import asyncio

import psycopg

from readside.shared.db import open_pool


def test_a_connection_ended_while_pooled_is_replaced_and_a_fresh_one_is_not_checked(db_url: str) -> None:
    async def go() -> None:
        pool = await open_pool(db_url, min_size=1, max_size=1)
        try:
            await pool.wait()
            async with pool.connection() as conn:
                first = (await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0]  # type: ignore[index]
            async with pool.connection() as conn:  # just given back: the same session, no check
                assert (await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0] == first  # type: ignore[index]
            stats = pool.get_stats()
            assert stats.get("connections_lost", 0) == 0
            with psycopg.connect(db_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (first,))
            await asyncio.sleep(0.2)  # the server's goodbye reaches the pooled connection's socket
            async with pool.connection() as conn:  # within RECHECK_AFTER, but readable: checked
                second = (await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0]  # type: ignore[index]
            assert second != first
        finally:
            await pool.close()

    asyncio.run(go())
