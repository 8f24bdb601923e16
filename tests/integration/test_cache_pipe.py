"""The API's pipelined Redis reads (shared/resp.py) and ``Cache.lookup`` on a real Redis/Valkey:
replies reach the caller who asked, a caller who gives up leaves the connection in step, a Redis
that does not answer is a timeout (and the cache falls back), a lost connection is made again."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from readside.shared.cache import Cache, generation_key, version_key
from readside.shared.resp import Pipe


def _run(coro):
    return asyncio.run(coro)


def test_concurrent_commands_each_get_their_own_reply(redis_url: str) -> None:
    async def go() -> None:
        pipe = Pipe.for_url(redis_url, timeout=2.0)
        assert pipe is not None
        key = f"test:pipe:{uuid.uuid4().hex}"
        try:
            await asyncio.gather(*(pipe.command("SET", f"{key}:{i}", f"value {i}") for i in range(50)))
            got = await asyncio.gather(*(pipe.command("GET", f"{key}:{i}") for i in range(50)))
            assert got == [f"value {i}".encode() for i in range(50)]
            assert await pipe.command("MGET", f"{key}:3", f"{key}:missing") == [b"value 3", None]
            with pytest.raises(Exception, match="not an integer"):
                await pipe.command("INCR", f"{key}:1")  # an error reply fails that caller only
            assert await pipe.command("GET", f"{key}:2") == b"value 2"
        finally:
            await pipe.command("DEL", *(f"{key}:{i}" for i in range(50)))
            pipe.close()

    _run(go())


def test_a_caller_who_gives_up_leaves_the_connection_in_step(redis_url: str) -> None:
    async def go() -> None:
        pipe = Pipe.for_url(redis_url, timeout=2.0)
        assert pipe is not None
        key = f"test:pipe:{uuid.uuid4().hex}"
        try:
            await pipe.command("SET", key + ":a", "a")
            await pipe.command("SET", key + ":b", "b")
            abandoned = asyncio.ensure_future(pipe.command("GET", key + ":a"))
            await asyncio.sleep(0)
            abandoned.cancel()
            assert await pipe.command("GET", key + ":b") == b"b"  # not "a": its reply was dropped
        finally:
            await pipe.command("DEL", key + ":a", key + ":b")
            pipe.close()

    _run(go())


def test_a_redis_that_does_not_answer_times_out_and_the_cache_serves_without_it() -> None:
    async def go() -> None:
        accepted: list[asyncio.StreamWriter] = []
        silent = await asyncio.start_server(lambda reader, writer: accepted.append(writer), "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        cache = Cache(f"redis://127.0.0.1:{port}/0", timeout=0.05, cooldown=5.0)
        try:
            t0 = time.monotonic()
            assert await cache.lookup("viewer:u-1", "threads", "scope") is None  # down: PostgreSQL answers
            assert time.monotonic() - t0 < 1.0
            assert not cache.available
            assert await cache.versions("viewer:u-1", "threads") is None  # skipped during the cooldown
        finally:
            await cache.close()
            for writer in accepted:
                writer.close()
            silent.close()
            await silent.wait_closed()

    _run(go())


def test_a_lost_connection_is_made_again(redis_url: str) -> None:
    async def go() -> None:
        pipe, admin = Pipe.for_url(redis_url, timeout=2.0), Pipe.for_url(redis_url, timeout=2.0)
        assert pipe is not None and admin is not None
        try:
            first = await pipe.command("CLIENT", "ID")
            await admin.command("CLIENT", "KILL", "ID", first)  # as a restart or an idle timeout would
            for _ in range(100):  # what is in flight when the close arrives fails; then it reconnects
                try:
                    again = await pipe.command("CLIENT", "ID")
                except ConnectionError:
                    continue
                if again != first:
                    break
                await asyncio.sleep(0.01)
            assert again != first and await pipe.command("PING") == b"PONG"
        finally:
            pipe.close()
            admin.close()

    _run(go())


def test_lookup_finds_the_body_under_the_current_versions_only(redis_url: str) -> None:
    async def go() -> None:
        cache = Cache(redis_url)
        scope, key, projection = f"scope-{uuid.uuid4().hex}", f"viewer:{uuid.uuid4().hex}", f"p{uuid.uuid4().hex[:8]}"
        try:
            assert await cache.lookup(key, projection, scope) == (None, None, None)  # nothing created
            await cache._read("SET", version_key(key), 7)
            await cache._read("SET", generation_key(projection), 2)
            assert await cache.lookup(key, projection, scope) == (7, 2, None)  # a MISS: not stored yet
            await cache._read("SET", cache.body_key(key, 2, 7, scope), b"seven")
            assert await cache.lookup(key, projection, scope) == (7, 2, b"seven")
            await cache._read("INCR", version_key(key))  # a bump: the body of 7 is not current
            assert await cache.lookup(key, projection, scope) == (8, 2, None)
            await cache._read("SET", cache.body_key(key, 2, 8, scope), b"eight")
            assert await cache.lookup(key, projection, scope) == (8, 2, b"eight")
            await cache._read("SET", generation_key(projection), 3)  # a cutover: nor is the old generation's
            assert await cache.lookup(key, projection, scope) == (8, 3, None)
        finally:
            await cache._read("DEL", generation_key(projection))
            await cache._read("DEL", version_key(key), cache.body_key(key, 2, 7, scope), cache.body_key(key, 2, 8, scope))
            await cache.close()

    _run(go())
