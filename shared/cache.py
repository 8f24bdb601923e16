"""Redis (or Valkey) in front of PostgreSQL: versions, ready response bodies, single-flight.

Keys (never scanned, never pattern-deleted). The keys of one scope share its hash tag ``{<key>}``,
so all a request reads besides the generation is in one hash slot (a Redis Cluster serves it):
- ``rs:{<key>}:v``         the version of one cacheable scope (``viewer:<id>``, ``thread:<id>``,
                           ``providers:<category>`` …). The projector INCRs it after each commit
                           that changed the scope; a missing version is created with a time-based
                           start (``SET NX``), so versions never repeat after a flush or eviction.
                           Reading never creates one: the API serves a scope Redis holds no version
                           for from PostgreSQL, and seeds it (``seed_version``) only when PostgreSQL
                           says something wrote the scope — requests alone add no keys.
- ``rs:g:<projection>``    the projection's generation (``projections.generation``), set by
                           ``readside rebuild``/``rollback`` after a cutover commits; part of every
                           ETag and body key, so nothing rendered from a previous generation's
                           tables is served after a cutover. Missing: the API copies it from
                           PostgreSQL (``SET NX``). On one server it is read with the version in
                           one MGET; on a cluster it is kept in process, and a cutover is announced
                           first (``PENDING``: answers come from PostgreSQL) — ``readside.shared.cluster``.
- ``rs:{<key>}:b:<digest>:<generation>:<version>``  a ready JSON body: ``<digest>`` names the
                           normalized parameters, the generation and the version are the ones it
                           was rendered under; expires after ``ttl`` ± 20 % (bounds memory and the
                           rare crash between commit and bump).
- ``rs:{<key>}:l:<digest>:<generation>:<version>``  a single-flight lock while one renders it.
- channel ``rs:changed``   each bump is published, for ``/v1/events`` subscribers: one message per
                           bump, a JSON array of the bumped scopes (never a delimiter-joined
                           string: a scope names ids, and an id must not be able to add scopes).

A request without ``If-None-Match`` makes one round trip while its scope is not bumped
(``lookup``): one MGET reads the version (the generation, on one server) and the body stored under
the versions the scope's previous lookup found (remembered in-process); after a bump, one GET more.
(A Lua script reading the body under the versions it has just read was one round trip too, but
cost Redis ~100 µs of CPU per 39 KB answer against ~25 µs for an MGET.)

Every call has a short timeout. On one server the request path's reads (``versions``, ``lookup``,
``get``) share one pipelined connection (``readside.shared.resp``: one timer for the connection; a
late reply aborts it and fails what waits on it); on a cluster they go through redis-py's
``RedisCluster`` (routed by slot). The rest goes through redis-py under ``asyncio.timeout`` (the
client has no socket timeout, which redis-py would enforce with a task per command); a call cut
short closes its connection. After a failure the cache is skipped for ``cooldown`` seconds (answers
come from PostgreSQL) and then tried again, so it recovers by itself.
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
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError

from readside.shared.cluster import GENERATION_CHANNEL, PENDING, Generations, cluster_client, cluster_nodes
from readside.shared.errors import CacheUnavailable
from readside.shared.flights import shared_call
from readside.shared.resp import Pipe

__all__ = ["Cache", "CacheDown", "generation_key", "version_key"]

CacheDown = CacheUnavailable  # the name the cache's callers know it by (readside.shared.errors)

log = logging.getLogger(__name__)

PREFIX = "rs:"
# Versions expire when nothing bumps or seeds them for this long. Safe: a recreated version starts
# from the current time in microseconds, above every version the scope had before.
VERSION_TTL = 3600
# Scopes whose last body key ``lookup`` remembers (a dict of short strings, oldest dropped first).
GUESSES = 10_000
FLIGHT_GRACE = 1.0  # seconds a finished render stays shared in-process
CHANNEL = PREFIX + "changed"
# Sets the generation back to missing only if it is still the pending marker (a cutover's publish may have won).
_CLEAR_PENDING = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
# KEYS: the versions to bump (one server); ARGV: their start when missing, their TTL, the channel, the message.
_BUMP = ("for _, key in ipairs(KEYS) do redis.call('SET', key, ARGV[1], 'NX', 'EX', ARGV[2]) "
         "redis.call('INCR', key) redis.call('EXPIRE', key, ARGV[2]) end redis.call('PUBLISH', ARGV[3], ARGV[4]) return #KEYS")


def version_key(key: str) -> str:
    return f"{PREFIX}{{{key}}}:v"


def generation_key(projection: str) -> str:
    return PREFIX + "g:" + projection


class Cache:
    def __init__(self, url: str, *, timeout: float = 0.1, ttl: int = 300, cooldown: float = 1.0) -> None:
        self.cluster = cluster_nodes(url) is not None
        self._generations: Generations | None = None
        self._pipe: Pipe | None = None
        self.client: aioredis.Redis | RedisCluster
        if self.cluster:  # redis-py routes each command by slot; generations are kept in process
            self.client = cluster_client(url, socket_timeout=None, socket_connect_timeout=timeout, protocol=2)
            self._generations = Generations(lambda projection: self._read("GET", generation_key(projection)), url)
        else:
            self.client = aioredis.from_url(url, socket_timeout=None, socket_connect_timeout=timeout,
                                            retry_on_timeout=False, health_check_interval=0, protocol=2)
            self._pipe = Pipe.for_url(url, timeout=timeout * 2)  # the request path's reads, pipelined
        self._guesses: dict[str, str] = {}  # scope -> the body key its last lookup found current
        self.timeout, self.ttl, self.cooldown = timeout, ttl, cooldown
        self._bump_sha = hashlib.sha1(_BUMP.encode()).hexdigest()
        self._down_until = 0.0
        self._flights: dict[str, asyncio.Future[bytes]] = {}
        self._stores: set[asyncio.Task[None]] = set()
        self._adopting: dict[str, asyncio.Future[int | None]] = {}

    async def close(self) -> None:
        if self._stores:
            await asyncio.gather(*self._stores, return_exceptions=True)
        if self._pipe is not None:
            self._pipe.close()
        if self._generations is not None:
            await self._generations.close()
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
        """One command on a pooled connection, the raw reply: what the client adds per command (retries,
        hooks, callbacks) is most of the hot path's client cost. An interrupted one's connection is closed."""
        pool = self.client.connection_pool  # type: ignore[union-attr]  # one server only (_read)
        conn = await pool.get_connection()
        try:
            await conn.send_command(*args, check_health=False)
            return await conn.read_response()
        finally:
            await pool.release(conn)

    async def _read(self, *args: object):  # noqa: ANN202
        """One command of the request path, the raw reply: on the pipelined connection (``readside.shared.resp``,
        which enforces the timeout) or else under ``asyncio.timeout``. Raises ``CacheDown`` (down a while)."""
        try:
            if self._pipe is not None:
                return await self._pipe.command(*args)
            async with asyncio.timeout(self.timeout * 2):
                if self.cluster:  # routed by the slot of the keys (one slot: hash tags)
                    return await self.client.execute_command(*args)  # type: ignore[arg-type]
                return await self._command(*args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            raise CacheDown from exc

    async def _script(self, script: str, sha: str, keys: int, *args: object):  # noqa: ANN202
        try:
            return await self._command("EVALSHA", sha, keys, *args)
        except NoScriptError:  # not loaded yet (or flushed): EVAL loads it
            return await self._command("EVAL", script, keys, *args)

    # -- versions ----------------------------------------------------------------------------
    async def versions(self, key: str, projection: str) -> tuple[int | None, int | None] | None:
        """``(version of the scope, generation of the projection)`` in one round trip; either is None if
        Redis does not hold it (nothing is created). None when the cache is down or a cutover is pending."""
        if not self.available:
            return None
        try:
            if self._generations is None:
                value, generation = await self._read("MGET", f"{PREFIX}{{{key}}}:v", PREFIX + "g:" + projection)
            else:
                found = await self._in_slot(key, projection, None)
                if found is None:
                    return None
                value, generation, _ = found
        except CacheDown:
            return None
        return None if value is None else int(value), None if generation is None else int(generation)

    async def lookup(self, key: str, projection: str, scope: str) -> tuple[int | None, int | None, bytes | None] | None:
        """``versions`` and, when both exist, the body stored for ``scope`` under them. One round trip
        while the scope's versions stay what its previous lookup found (one MGET: the versions and the
        body under the guessed ones, at one instant); after a bump, a second for the body."""
        if not self.available:
            return None
        guess = self._guesses.get(scope)
        try:
            if self._generations is None:
                keys = (f"{PREFIX}{{{key}}}:v", PREFIX + "g:" + projection)
                if guess is None:
                    (value, generation), body = await self._read("MGET", *keys), None
                else:
                    value, generation, body = await self._read("MGET", *keys, guess)
            else:
                found = await self._in_slot(key, projection, guess)
                if found is None:
                    return None
                value, generation, body = found
            if value is None or generation is None:
                return None if value is None else int(value), None if generation is None else int(generation), None
            current = self.body_key(key, int(generation), int(value), scope)
            if current != guess:
                body = await self._read("GET", current)
                if len(self._guesses) >= GUESSES:
                    del self._guesses[next(iter(self._guesses))]  # the oldest
                self._guesses[scope] = current
        except CacheDown:
            return None
        return int(value), int(generation), body

    async def _in_slot(self, key: str, projection: str, guess: str | None) -> tuple[bytes | None, int | None, bytes | None] | None:
        """Cluster mode: ``(version, generation, body under guess)``, the generation kept in process, the
        rest in the scope's slot. None while a cutover is pending (PostgreSQL answers). Raises ``CacheDown``."""
        generation = await self._generations.get(projection)  # type: ignore[union-attr]
        if generation is PENDING:
            return None
        if guess is None:
            return await self._read("GET", f"{PREFIX}{{{key}}}:v"), generation, None  # type: ignore[return-value]
        value, body = await self._read("MGET", f"{PREFIX}{{{key}}}:v", guess)
        return value, generation, body  # type: ignore[return-value]

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
            await self._call(self.client.set(version_key(key), time.time_ns() // 1000, nx=True, ex=VERSION_TTL))

    async def adopt_generation(self, projection: str, load: Callable[[], Awaitable[int]]) -> int | None:
        """Redis holds no generation for ``projection`` (new, flushed, evicted): store the one
        ``load`` reads from PostgreSQL (``SET NX``: a cutover may have set a newer one meanwhile)
        and return what Redis holds then. Once per burst per process. None when down."""
        async def adopt() -> int | None:
            generation = await load()
            try:
                sent = time.monotonic()
                pipe = self.client.pipeline(transaction=False)
                pipe.set(generation_key(projection), generation, nx=True)
                pipe.get(generation_key(projection))
                _, value = await self._call(pipe.execute())
            except CacheDown:
                return None
            if self._generations is not None and self._generations.learn(projection, value, sent) is PENDING:
                return None  # a cutover is pending: PostgreSQL answers
            return int(value)

        return await shared_call(self._adopting, projection, adopt)

    async def publish_generation(self, projection: str, generation: int | bytes | None) -> None:
        """After a cutover commits: the projection's new generation; ``PENDING`` to announce one (on a
        cluster, ``readside.shared.cluster``); None when the announced one failed (deleted if still
        pending). On a cluster, a message on ``GENERATION_CHANNEL`` too. Raises ``CacheDown``."""
        try:
            async with asyncio.timeout(max(self.timeout * 10, 1.0)):
                if generation is None:
                    await self.client.eval(_CLEAR_PENDING, 1, generation_key(projection), PENDING)
                else:
                    await self.client.set(generation_key(projection), generation)
                if self.cluster:
                    await self.client.publish(GENERATION_CHANNEL, projection)
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
                if not self.cluster:
                    await self._script(_BUMP, self._bump_sha, len(keys), *(version_key(k) for k in keys),
                                       start, VERSION_TTL, CHANNEL, orjson.dumps(keys))
                    return
                # A cluster: per-scope commands in redis-py's cluster pipeline (each node gets its
                # scopes' in one round trip, the nodes in parallel), then the message.
                pipe = self.client.pipeline(transaction=False)
                for key in keys:
                    pipe.set(version_key(key), start, nx=True, ex=VERSION_TTL)
                    pipe.incr(version_key(key))
                    pipe.expire(version_key(key), VERSION_TTL)
                await pipe.execute()
                await self.client.publish(CHANNEL, orjson.dumps(keys))
        except (RedisError, OSError, TimeoutError) as exc:
            raise CacheDown from exc

    # -- bodies ------------------------------------------------------------------------------
    @staticmethod
    def body_key(key: str, generation: int, version: int, scope: str) -> str:
        """The body of ``scope`` (the parameters) rendered under the generation and the version of
        the cache scope ``key``: in ``key``'s hash slot."""
        return f"{PREFIX}{{{key}}}:b:{hashlib.blake2b(scope.encode(), digest_size=16).hexdigest()}:{generation}:{version}"

    async def get(self, body_key: str) -> bytes | None:
        try:
            return await self._read("GET", body_key)
        except CacheDown:
            return None

    async def single_flight(self, body_key: str, render: Callable[[], Awaitable[bytes]]) -> bytes:
        """Render a missing body once per burst: in-process callers share one future; other
        processes wait briefly on a Redis lock and read the stored result."""
        return await shared_call(self._flights, body_key, lambda: self._render_once(body_key, render), grace=FLIGHT_GRACE)

    async def _render_once(self, body_key: str, render: Callable[[], Awaitable[bytes]]) -> bytes:
        cut = body_key.rindex(":b:")  # the digest, the generation and the version follow it
        lock = body_key[:cut] + ":l:" + body_key[cut + 3 :]
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

