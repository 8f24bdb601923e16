"""Redis (or Valkey) in front of PostgreSQL: versions, ready response bodies, single-flight.

Keys (never scanned, never pattern-deleted):
- ``rs:v:<key>``           the version of one cacheable scope (``viewer:<id>``, ``thread:<id>``,
                           ``providers:<category>`` …). The projector INCRs it after each commit
                           that changed the scope; a missing version is created with a time-based
                           start (``SET NX``), so versions never repeat after a flush or eviction.
                           Reading never creates one: the API serves a scope Redis holds no
                           version for from PostgreSQL, and seeds the version (``seed_version``)
                           only when PostgreSQL says something wrote the scope — so requests alone
                           (any category, any thread id) add no keys, whatever they name.
- ``rs:g:<projection>``    the projection's generation (``projections.generation``), set by
                           ``readside rebuild``/``rollback`` after a cutover commits. Read with
                           the version in one MGET; part of every ETag and body key, so nothing
                           rendered from a previous generation's tables is served after a cutover.
                           Missing: the API copies it from PostgreSQL (``SET NX``).
- ``rs:b:<digest>:<generation>:<version>``  a ready JSON body: ``<digest>`` names the normalized
                           parameters (the scope), the generation and the version are the ones it
                           was rendered under; expires after ``ttl`` ± 20 % (bounds memory and the
                           rare crash between commit and bump).
- ``rs:l:<digest>:<generation>:<version>``  a short single-flight lock while one process renders a
                           missing body.
- channel ``rs:changed``   each bump is published, for ``/v1/events`` subscribers: one message per
                           bump, a JSON array of the bumped scopes (never a delimiter-joined
                           string: a scope names ids, and an id must not be able to add scopes).

A request without ``If-None-Match`` makes one round trip (``lookup``): a Lua script reads the
version and the generation and, when both exist, the body stored under them. (The body's key is
built in the script, so it is not declared to Redis: a single Redis or Valkey, not a cluster.)

Every call has a short timeout (``asyncio.timeout`` around the whole call; the client itself has
no socket timeout, which redis-py would enforce with a task per command); a call cut short closes
its connection (redis-py does on any interruption). After a failure the cache is skipped for
``cooldown`` seconds (answers come from PostgreSQL) and then tried again, so it recovers by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from readside.shared.errors import CacheUnavailable

__all__ = ["Cache", "CacheDown"]

CacheDown = CacheUnavailable  # the name the cache's callers know it by (readside.shared.errors)

log = logging.getLogger(__name__)

PREFIX = "rs:"
# Versions expire when nothing bumps or seeds them for this long. Safe: a recreated version starts
# from the current time in microseconds, above every version the scope had before.
VERSION_TTL = 3600
FLIGHT_GRACE = 1.0  # seconds a finished render stays shared in-process
CHANNEL = PREFIX + "changed"
# KEYS: the version, the generation; ARGV: the body key without its ``<generation>:<version>``.
_LOOKUP = """
local v = redis.call('GET', KEYS[1])
local g = redis.call('GET', KEYS[2])
if v and g then
  return {v, g, redis.call('GET', ARGV[1] .. g .. ':' .. v)}
end
return {v, g}
"""
# KEYS: the versions to bump; ARGV: their start when missing, their TTL, the channel, the message.
_BUMP = """
for _, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[1], 'NX', 'EX', ARGV[2])
  redis.call('INCR', key)
  redis.call('EXPIRE', key, ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return #KEYS
"""


class Cache:
    def __init__(self, url: str, *, timeout: float = 0.1, ttl: int = 300, cooldown: float = 1.0) -> None:
        self.client = aioredis.from_url(
            url, socket_timeout=None, socket_connect_timeout=timeout, retry_on_timeout=False, health_check_interval=0,
            protocol=2,
        )
        self._lookup_sha = hashlib.sha1(_LOOKUP.encode()).hexdigest()
        self._bump_sha = hashlib.sha1(_BUMP.encode()).hexdigest()
        self.timeout = timeout
        self.ttl = ttl
        self.cooldown = cooldown
        self._down_until = 0.0
        self._flights: dict[str, asyncio.Future[bytes]] = {}
        self._stores: set[asyncio.Task[None]] = set()
        self._adopting: dict[str, asyncio.Future[int | None]] = {}

    async def close(self) -> None:
        if self._stores:
            await asyncio.gather(*self._stores, return_exceptions=True)
        await self.client.aclose()

    # -- availability ----------------------------------------------------------------------
    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        if self.available:
            log.warning("cache unavailable (%s); serving from PostgreSQL for %.1fs", exc, self.cooldown)
        self._down_until = time.monotonic() + self.cooldown

    async def _call(self, coro: Awaitable):  # noqa: ANN202
        try:
            async with asyncio.timeout(self.timeout * 2):
                return await coro
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            raise CacheDown from exc

    async def _command(self, *args: object):  # noqa: ANN202
        """One command on a pooled connection, the raw reply: what the client adds per command
        (retries, observability hooks, response callbacks) is most of the hot path's client cost.
        redis-py closes a connection whose command was interrupted, so none is reused mid-reply."""
        pool = self.client.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_command(*args, check_health=False)
            return await conn.read_response()
        finally:
            await pool.release(conn)

    async def _evalsha_lookup(self, *args: str):  # noqa: ANN202
        return await self._script(_LOOKUP, self._lookup_sha, 2, *args)

    async def _script(self, script: str, sha: str, keys: int, *args: object):  # noqa: ANN202
        try:
            return await self._command("EVALSHA", sha, keys, *args)
        except NoScriptError:  # not loaded yet (or flushed): EVAL loads it
            return await self._command("EVAL", script, keys, *args)

    # -- versions ----------------------------------------------------------------------------
    async def versions(self, key: str, projection: str) -> tuple[int | None, int | None] | None:
        """``(version of the scope, generation of the projection)`` in one round trip; either is
        None if Redis does not hold it (nothing is created). None when the cache is down."""
        if not self.available:
            return None
        try:
            value, generation = await self._call(self._command("MGET", PREFIX + "v:" + key, PREFIX + "g:" + projection))
        except CacheDown:
            return None
        return None if value is None else int(value), None if generation is None else int(generation)

    async def lookup(self, key: str, projection: str, scope: str) -> tuple[int | None, int | None, bytes | None] | None:
        """``versions`` and, when both exist, the body stored for ``scope`` under them, in one
        round trip. None when the cache is down."""
        if not self.available:
            return None
        try:
            got = await self._call(self._evalsha_lookup(PREFIX + "v:" + key, PREFIX + "g:" + projection,
                                                        self._body_prefix(scope)))
        except CacheDown:
            return None
        value, generation = got[0], got[1]
        return (None if value is None else int(value), None if generation is None else int(generation),
                got[2] if len(got) > 2 else None)

    def seed_soon(self, key: str) -> None:
        """``seed_version`` in the background (the response does not wait for it)."""
        if self.available:
            task = asyncio.create_task(self.seed_version(key))
            self._stores.add(task)
            task.add_done_callback(self._stores.discard)

    async def seed_version(self, key: str) -> None:
        """Give a scope that PostgreSQL says exists (something wrote it) a version, so its next
        requests are served from the cache: a time-based start, as ``bump`` creates one. Never
        call it for a scope only a request named. Best effort: a failure only skips the cache."""
        if not self.available:
            return
        with contextlib.suppress(CacheDown):
            await self._call(self.client.set(PREFIX + "v:" + key, time.time_ns() // 1000, nx=True, ex=VERSION_TTL))

    async def adopt_generation(self, projection: str, load: Callable[[], Awaitable[int]]) -> int | None:
        """Redis holds no generation for ``projection`` (new, flushed, evicted): store the one
        ``load`` reads from PostgreSQL (``SET NX``: a cutover may have set a newer one meanwhile)
        and return what Redis holds then. Once per burst per process. None when down."""
        flight = self._adopting.get(projection)
        if flight is not None:
            return await asyncio.shield(flight)
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._adopting[projection] = future
        try:
            generation = await load()
            try:
                pipe = self.client.pipeline(transaction=False)
                pipe.set(PREFIX + "g:" + projection, generation, nx=True)
                pipe.get(PREFIX + "g:" + projection)
                _, value = await self._call(pipe.execute())
                result: int | None = int(value)
            except CacheDown:
                result = None
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody logs "never retrieved"
            raise
        finally:
            del self._adopting[projection]

    async def publish_generation(self, projection: str, generation: int) -> None:
        """After a cutover commits: the projection's new generation. Raises ``CacheDown``."""
        try:
            async with asyncio.timeout(max(self.timeout * 10, 1.0)):
                await self.client.set(PREFIX + "g:" + projection, generation)
        except (RedisError, OSError, TimeoutError) as exc:
            raise CacheDown from exc

    async def bump(self, keys: Iterable[str]) -> None:
        """After a commit: a new version for every changed scope, and their names published, in one
        command (a script: a pipeline of 3 commands a scope cost the projector ~10x the CPU).
        INCR on a missing key would restart at 1 and could meet an old body: it starts from now
        (``SET NX``). Raises when down."""
        keys = sorted(keys)
        if not keys:
            return
        start = time.time_ns() // 1000
        try:
            async with asyncio.timeout(max(self.timeout * 10, 1.0)):
                await self._script(_BUMP, self._bump_sha, len(keys), *(PREFIX + "v:" + k for k in keys),
                                   start, VERSION_TTL, CHANNEL, orjson.dumps(keys))
        except (RedisError, OSError, TimeoutError) as exc:
            raise CacheDown from exc

    # -- bodies ------------------------------------------------------------------------------
    @staticmethod
    def _body_prefix(scope: str) -> str:
        return PREFIX + "b:" + hashlib.blake2b(scope.encode(), digest_size=16).hexdigest() + ":"

    @classmethod
    def body_key(cls, generation: int, version: int, scope: str) -> str:
        return f"{cls._body_prefix(scope)}{generation}:{version}"

    async def get(self, body_key: str) -> bytes | None:
        try:
            return await self._call(self.client.get(body_key))
        except CacheDown:
            return None

    async def single_flight(self, body_key: str, render: Callable[[], Awaitable[bytes]]) -> bytes:
        """Render a missing body once per burst: in-process callers share one future; other
        processes wait briefly on a Redis lock and read the stored result."""
        flight = self._flights.get(body_key)
        if flight is not None:
            return await asyncio.shield(flight)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._flights[body_key] = future
        try:
            body = await self._render_once(body_key, render)
            future.set_result(body)
            # A caller whose cache GET missed just before this flight landed would otherwise
            # render again: the result stays shared for a moment (the key names its version).
            loop.call_later(FLIGHT_GRACE, self._land, body_key, future)
            return body
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody logs "never retrieved"
            self._land(body_key, future)
            raise

    def _land(self, body_key: str, future: asyncio.Future[bytes]) -> None:
        if self._flights.get(body_key) is future:
            del self._flights[body_key]

    async def _render_once(self, body_key: str, render: Callable[[], Awaitable[bytes]]) -> bytes:
        lock = PREFIX + "l:" + body_key[len(PREFIX) + 2 :]
        try:
            owner = await self._call(self.client.set(lock, b"1", nx=True, px=2000))
        except CacheDown:
            return await render()
        if not owner:
            for _ in range(50):  # another process renders it: wait up to ~0.5 s
                await asyncio.sleep(0.01)
                body = await self.get(body_key)
                if body is not None:
                    return body
                if not self.available:
                    break
        try:
            body = await render()
        except BaseException:
            # A failed render (a 404, PostgreSQL down) frees our lock at once: the next identical
            # request must not wait on it.
            if owner:
                with contextlib.suppress(CacheDown):
                    await self._call(self.client.delete(lock))
            raise
        # Stored after the answer, not before it: the response does not wait for the round trip
        # (in-process callers share the flight meanwhile; other processes poll for the body).
        task = asyncio.create_task(self._store(body_key, lock, body))
        self._stores.add(task)
        task.add_done_callback(self._stores.discard)
        return body

    async def _store(self, body_key: str, lock: str, body: bytes) -> None:
        try:
            ttl = int(self.ttl * random.uniform(0.8, 1.2))
            pipe = self.client.pipeline(transaction=False)
            pipe.set(body_key, body, ex=ttl)
            pipe.delete(lock)
            await self._call(pipe.execute())
        except CacheDown:
            pass

