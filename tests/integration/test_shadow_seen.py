"""A shadow's dedupe (``Shadow.first_seen``): event ids go to PostgreSQL in one COPY text piece,
so ids holding what that format reserves (a backslash, ``\\.``, ``\\N``) must arrive unchanged."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from readside.projector.shadow import Shadow, _copy_text
from readside.readmodels.registry import REGISTRY

AWKWARD = ["plain-1", "back\\slash", "\\.", "\\N", "tail\\", "ünïcødé-✓", "a b", "\\\\two"]


@pytest.mark.parametrize(
    "ids, expected",
    [
        pytest.param(["a", "b"], "a\nb\n", id="plain"),
        pytest.param(["a\\b"], "a\\\\b\n", id="backslash"),
        pytest.param(["x\ty", "z\rw", "n\nm"], "x\\ty\nz\\rw\nn\\nm\n", id="reserved"),
    ],
)
def test_copy_text(ids: list[str], expected: str) -> None:
    assert _copy_text(ids) == expected


def test_first_seen_keeps_awkward_ids_exact(db_url: str) -> None:
    async def run() -> tuple[set[str], set[str], set[str], list[str]]:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            shadow = Shadow(REGISTRY["threads"], "rs_build_threads")
            async with conn.transaction():
                await shadow.create(conn, {})
            async with conn.transaction():
                first = await shadow.first_seen(conn, AWKWARD[:5])
            async with conn.transaction():
                again = await shadow.first_seen(conn, AWKWARD)  # first wins: the earlier five are not new
            async with conn.transaction():
                none = await shadow.first_seen(conn, AWKWARD)
            cur = await conn.execute('SELECT event_id FROM rs_build_threads.rs_seen ORDER BY event_id COLLATE "C"')
            stored = [r[0] for r in await cur.fetchall()]
            return first, again, none, stored

    first, again, none, stored = asyncio.run(run())
    assert first == set(AWKWARD[:5])
    assert again == set(AWKWARD[5:])
    assert none == set()
    assert stored == sorted(AWKWARD)
