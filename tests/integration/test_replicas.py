"""Choosing a read replica (api/replicas.py) against a real primary and streaming replica
(tests/replication.py): a replica is used while it answers and keeps up; a paused or stopped one
is left for the primary, and comes back once it is well again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from readside.api.http import Timing
from readside.api.replicas import Replicas
from readside.shared.db import open_pool
from tests.replication import Cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    made = Cluster()
    try:
        made.start_primary()
        made.add_replica()
        yield made
    finally:
        made.close()


async def _until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _in_recovery(conn, replica: bool = False) -> bool:
    return (await (await conn.execute("SELECT pg_is_in_recovery()")).fetchone())[0]


def test_a_paused_replica_is_left_once_it_lags_and_used_again_once_it_caught_up(cluster: Cluster) -> None:
    primary, replica = cluster.primary, cluster.replicas[0]
    assert primary is not None

    async def go() -> None:
        pool = await open_pool(primary.url(), max_size=2)
        replicas = Replicas((replica.url(),), pool, pool_size=2, max_lag=0.5, probe=0.05)
        await replicas.open()
        try:
            await _until(lambda: replicas.for_read() is not None, "the replica to be usable")
            assert await replicas.read(replicas.for_read(), Timing(), _in_recovery)  # read on the replica
            replica.execute("SELECT pg_wal_replay_pause()")
            try:
                primary.execute("CREATE TABLE IF NOT EXISTS paused_writes (n int)")
                wal = primary.execute("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8")[0][0]
                # Still usable for a plain read within the lag allowed, never for a read that
                # needs what it has not replayed.
                assert replicas.replayed_past(wal) is None
                primary.execute("INSERT INTO paused_writes VALUES (1)")
                await _until(lambda: replicas.for_read() is None, "the paused replica to be left")
                assert replicas.replayed_past(0) is None  # too far behind for any read
            finally:
                replica.execute("SELECT pg_wal_replay_resume()")
            await _until(lambda: replicas.for_read() is not None, "the resumed replica to be used again")
            await _until(lambda: replicas.replayed_past(wal) is not None, "the replica to have replayed the write")
        finally:
            await replicas.close()
            await pool.close()

    asyncio.run(go())


def test_a_stopped_replica_fails_no_read(cluster: Cluster) -> None:
    primary, replica = cluster.primary, cluster.replicas[0]
    assert primary is not None

    async def go() -> None:
        pool = await open_pool(primary.url(), max_size=2)
        replicas = Replicas((replica.url(),), pool, pool_size=2, max_lag=5.0, probe=0.05)
        await replicas.open()
        try:
            await _until(lambda: replicas.for_read() is not None, "the replica to be usable")
            chosen = replicas.for_read()
            assert await replicas.read(chosen, Timing(), _in_recovery)
            replica.stop()
            try:
                # Chosen before the probe noticed: the read fails there, and the primary answers.
                assert not await replicas.read(chosen, Timing(), _in_recovery)
                await _until(lambda: replicas.for_read() is None, "the stopped replica to be left")
                assert not await replicas.read(replicas.for_read(), Timing(), _in_recovery)
            finally:
                replica.start()
            await _until(lambda: replicas.for_read() is not None, "the restarted replica to be used again", 60)
            assert await replicas.read(replicas.for_read(), Timing(), _in_recovery)
        finally:
            await replicas.close()
            await pool.close()

    asyncio.run(go())
