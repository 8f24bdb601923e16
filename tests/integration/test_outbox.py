"""The cache outbox with a real broker, PostgreSQL, Valkey and API: a projector killed with -9
between its commit and its version bump loses no invalidation (issue 13)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import httpx
import orjson
import psycopg
import pytest
import redis

from readside.projector.bookkeeping import insert_dead_letters
from readside.projector.dlq import replay
from readside.projector.outbox import Invalidator, record
from readside.readmodels.registry import REGISTRY
from readside.shared.cache import Cache
from readside.shared.db import migrate, open_pool
from readside.shared.settings import Settings
from tests.support import api_server, auth, message, projection_topics, send, started, wait_caught_up, wait_until

# ``readside projector --only threads``, optionally dying (SIGKILL, no cleanup of any kind) at the
# first notification after a commit: the commit is in PostgreSQL, the version bump never left.
# The consumers' session timeout is lowered to 3 s as in test_chaos.py: the next process joins once
# the killed one's session expired.
LAUNCH = (
    "import os, signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
    "import functools, aiokafka, readside.projector.engine as engine\n"
    "engine.AIOKafkaConsumer = functools.partial(aiokafka.AIOKafkaConsumer, session_timeout_ms=3000, heartbeat_interval_ms=1000)\n"
    "import readside.projector.outbox as outbox\n"
    "async def die(self, *args):\n"
    "    os.kill(os.getpid(), signal.SIGKILL)\n"
    "if %r:\n"
    "    outbox.Invalidator.__call__ = die\n"
    "from readside.cli import main; raise SystemExit(main(['projector', '--only', 'threads']))\n"
)
KILLS = 6


def _projector(settings: Settings, logs: Path, name: str, *, dies_after_commit: bool) -> subprocess.Popen:
    with open(logs / f"{name}.log", "wb") as log:  # the child holds its own descriptor
        return subprocess.Popen([sys.executable, "-c", LAUNCH % dies_after_commit],
                                env={**os.environ, **settings.to_env()}, stdout=log, stderr=subprocess.STDOUT)


def _outbox_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM cache_outbox").fetchone()[0]  # type: ignore[index]


def _messages(url: str, thread: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM thread_messages WHERE thread_id = %s", (thread,)).fetchone()[0]  # type: ignore[index]


def _last_preview(base: str, settings: Settings, user: str) -> str:
    r = httpx.get(base + "/v1/threads/preview", headers=auth(SimpleNamespace(settings=settings), user), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["items"][0]["last_message_preview"]


def test_a_projector_killed_between_commit_and_bump_never_leaves_a_stale_body_after_the_next_relay(
    settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    settings = replace(settings, redis_url=redis_url)
    unique = uuid.uuid4().hex[:8]
    user, thread = f"u-ob-{unique}", f"t-ob-{unique}"
    topics = projection_topics(settings, "threads")
    send(settings, [started(thread, client=user, provider=f"p-{unique}", at=0),
                    message(thread, "m0", 1, sender=f"p-{unique}", sender_type="provider", content="n0")])
    first = _projector(settings, tmp_path, "first", dies_after_commit=False)
    try:
        wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", topics)
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0
    with api_server(settings.to_env(), tmp_path, ready="/readyz", timeout=30) as (base, _):
        assert _last_preview(base, settings, user) == "n0"  # rendered, and now in the cache
        for i in range(1, KILLS + 1):
            send(settings, [message(thread, f"m{i}", 1 + i, sender=f"p-{unique}", sender_type="provider", content=f"n{i}")])
            victim = _projector(settings, tmp_path, f"victim-{i}", dies_after_commit=True)
            assert victim.wait(90) == -signal.SIGKILL, (tmp_path / f"victim-{i}.log").read_text()
            # committed, never bumped: without the outbox this body would stay until its TTL
            assert _messages(settings.database_url, thread) == i + 1
            assert _outbox_rows(settings.database_url) == 1
            assert _last_preview(base, settings, user) == f"n{i - 1}", "the kill came after the bump: the test proves nothing"
            # the next projector relays what the dead one left, before anything else
            relay = _projector(settings, tmp_path, f"relay-{i}", dies_after_commit=False)
            try:
                wait_until(lambda: _outbox_rows(settings.database_url) == 0, 60, "the relay of the outbox")
                assert _last_preview(base, settings, user) == f"n{i}"
            finally:
                relay.send_signal(signal.SIGTERM)
                assert relay.wait(60) == 0, (tmp_path / f"relay-{i}.log").read_text()
    print(f"\noutbox: {KILLS} kills between commit and bump, {KILLS} relays, no stale body after any", flush=True)


@pytest.fixture
def relay_env(settings: Settings, redis_url: str):
    migrate(settings.database_url, [])

    async def make(url: str = redis_url) -> tuple[Invalidator, object]:
        pool = await open_pool(settings.database_url, min_size=1, max_size=2)
        return Invalidator(Cache(url, timeout=0.5), pool), pool

    return settings, make


def test_a_running_projector_relays_what_another_left_and_keeps_it_while_redis_is_down(relay_env, redis_url: str) -> None:
    settings, make = relay_env
    scope = f"viewer:u-sweep-{uuid.uuid4().hex[:8]}"
    r = redis.Redis.from_url(redis_url)

    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
            async with conn.transaction():
                old = await record(conn, "threads", {scope})
            await conn.execute("UPDATE cache_outbox SET created_at = now() - interval '1 minute' WHERE id = %s", (old,))
            async with conn.transaction():
                young = await record(conn, "threads", {scope + "-young"})
        # Redis unreachable: the sweep relays nothing and deletes nothing
        down, pool = await make("redis://127.0.0.1:1")
        assert await down.sweep() == 0
        await pool.close()
        await down.cache.close()
        assert _outbox_rows(settings.database_url) == 2
        # Redis up: the old row is bumped and deleted; the young one is left to its own projector
        before = r.get(f"rs:{{{scope}}}:v")
        up, pool = await make()
        assert await up.sweep() == 1
        assert r.get(f"rs:{{{scope}}}:v") != before
        with psycopg.connect(settings.database_url) as sync:
            left = [row[0] for row in sync.execute("SELECT id FROM cache_outbox")]
        assert left == [young]
        # its own projector: bumped from memory, then deleted on the next tick
        await up("threads", {scope + "-young"}, young)
        await up.forget_relayed()
        assert _outbox_rows(settings.database_url) == 0
        assert r.get(f"rs:{{{scope}-young}}:v") is not None
        await pool.close()
        await up.cache.close()

    try:
        asyncio.run(go())
    finally:
        r.close()


def test_a_dead_letter_replay_leaves_its_invalidation_in_the_outbox_while_redis_is_down(relay_env, redis_url: str) -> None:
    """``readside dlq replay`` keeps each chunk's changed scopes in the outbox: bumped and deleted
    after the commit when Redis answers, else left for a running projector's sweep."""
    settings, make = relay_env
    migrate(settings.database_url, REGISTRY.values())
    r = redis.Redis.from_url(redis_url)

    async def dead_letter(user: str) -> None:
        rec = started(f"t-{user}", client=user, provider=f"p-{user}")
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
            await insert_dead_letters(conn, "threads", [(settings.topic_prefix + rec.topic, 0, len(user), rec.key.encode(),
                                                         orjson.dumps(rec.value), "a fault since fixed")])

    async def go() -> None:
        pool = await open_pool(settings.database_url, min_size=1, max_size=2)
        try:
            down = f"u-rpd-{uuid.uuid4().hex[:8]}"
            await dead_letter(down)
            result = await replay(pool, replace(settings, redis_url="redis://127.0.0.1:1"), projection="threads")
            assert result.replayed == 1 and result.cache_error
            assert _outbox_rows(settings.database_url) == 1 and r.get(f"rs:{{viewer:{down}}}:v") is None
            sweeper, sweeper_pool = await make()
            assert await sweeper.sweep(older_than=0.0) == 1
            await sweeper_pool.close()
            await sweeper.cache.close()
            assert _outbox_rows(settings.database_url) == 0 and r.get(f"rs:{{viewer:{down}}}:v") is not None

            up = f"u-rpu-{uuid.uuid4().hex[:8]}"
            await dead_letter(up)
            result = await replay(pool, replace(settings, redis_url=redis_url), projection="threads")
            assert result.replayed == 1 and result.cache_error is None
            assert _outbox_rows(settings.database_url) == 0 and r.get(f"rs:{{viewer:{up}}}:v") is not None
        finally:
            await pool.close()

    try:
        asyncio.run(go())
    finally:
        r.close()
