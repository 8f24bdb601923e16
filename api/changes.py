"""Live change notifications: one Redis subscription per API process, fanned out to listeners.

The projector publishes the scopes of every version bump on ``rs:changed`` (``shared/cache.py``),
as one JSON array per bump: whatever an id holds (a newline...), it stays inside its own scope.
``Hub`` subscribes once, when the first listener joins, and routes each scope only to the
listeners allowed to read what it versions. Who that is, each read model declares with its
scopes (``Projection.scopes``, found by ``readside.readmodels.registry.route``; each read
model's ``scopes.py`` says which it has):

- ``OWNER``         the viewer whose ``sub`` is the scope's key (``viewer:<sub>``, ``workflows:<sub>``);
- ``PARTICIPANTS``  the two participants of the thread the key names (``thread:<id>``; looked up
                    in PostgreSQL and remembered, least recently used forgotten first:
                    participants never change once a thread has started);
- ``EVERYONE``      every viewer (``templates``: anyone may list templates);
- ``role(r)``       the viewers with the role ``r`` (``requests:<scope>``: technicians);
- ``NOBODY``        not streamed (public provider listings, ``providers…``: their responses are
                    ``public, max-age=30`` anyway).

A scope no registered read model declares is dropped; an audience the hub cannot route is an
error when the hub is made, so a read model's scopes are never dropped silently.

A listener keeps the scopes it has not sent yet as an ordered set, so a slow client costs at
most one entry per scope. Nothing is replayed: if the subscription breaks, every listener is
closed (its stream ends; the client reconnects and refetches with its ETags) and the next join
subscribes again — or fails with ``ChangesUnavailable`` while Redis is down (at once, for a
second after a failed attempt, so reconnecting clients do not queue behind connect timeouts).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from readside.api.auth import Viewer
from readside.readmodels.base import EVERYONE, NOBODY, OWNER, PARTICIPANTS, ROLE, ScopeKind
from readside.readmodels.registry import SCOPE_KINDS, route
from readside.shared.cache import CHANNEL
from readside.shared.cluster import node_url
from readside.shared.errors import CacheUnavailable

__all__ = ["ChangesUnavailable", "Hub", "Listener", "roles_of"]

log = logging.getLogger(__name__)

Participants = Callable[[list[str]], Awaitable[dict[str, tuple[str, str]]]]

MAX_PENDING = 10_000  # scopes a listener may owe its client before it is closed (it refetches all)
KNOWN_THREADS = 100_000  # participants remembered per process


class ChangesUnavailable(CacheUnavailable):
    """Redis could not be subscribed to in time."""


class Listener:
    """One stream's inbox of changed scopes."""

    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer
        self.closed = False
        self._pending: dict[str, None] = {}
        self._wake = asyncio.Event()

    def push(self, scope: str) -> None:
        if self.closed or scope in self._pending:
            return
        if len(self._pending) >= MAX_PENDING:
            self.close()
            return
        self._pending[scope] = None
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def next(self, timeout: float) -> list[str]:
        """The scopes changed since the last call, oldest first; [] after ``timeout`` or when closed."""
        if not self._pending and not self.closed:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
        self._wake.clear()
        scopes = list(self._pending)
        self._pending.clear()
        return scopes


def roles_of(kinds: Iterable[ScopeKind]) -> set[str]:
    """The roles the scopes of ``kinds`` are routed by; raises ``ValueError`` for an audience the
    hub does not know how to route."""
    roles = set()
    for kind in kinds:
        if kind.audience.startswith(ROLE):
            roles.add(kind.audience[len(ROLE):])
        elif kind.audience not in (OWNER, PARTICIPANTS, EVERYONE, NOBODY):
            raise ValueError(f"scope {kind.name!r}: no route for audience {kind.audience!r}")
    return roles


class Hub:
    def __init__(self, redis_url: str, participants: Participants, *, connect_timeout: float = 1.0,
                 cooldown: float = 1.0) -> None:
        self._url = redis_url
        self._participants = participants
        self._connect_timeout = connect_timeout
        self._cooldown = cooldown
        self._down_until = 0.0  # after a failed subscribe, joins fail at once until then
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._all: set[Listener] = set()
        self._by_user: dict[str, set[Listener]] = {}
        self._by_role: dict[str, set[Listener]] = {r: set() for r in roles_of(SCOPE_KINDS.values())}
        self._known: OrderedDict[str, tuple[str, str]] = OrderedDict()

    async def join(self, viewer: Viewer) -> Listener:
        """A listener for ``viewer``, once the subscription is live (nothing published after this
        returns can be missed). Raises ``ChangesUnavailable``."""
        async with self._lock:
            if self._task is None or self._task.done():
                if time.monotonic() < self._down_until:
                    raise ChangesUnavailable("Redis did not answer a moment ago")
                try:
                    self._task = await self._subscribe()
                except ChangesUnavailable:
                    self._down_until = time.monotonic() + self._cooldown
                    raise
            listener = Listener(viewer)
            self._all.add(listener)
            self._by_user.setdefault(viewer.sub, set()).add(listener)
            for r in viewer.roles:
                if r in self._by_role:
                    self._by_role[r].add(listener)
            return listener

    def leave(self, listener: Listener) -> None:
        listener.close()
        self._all.discard(listener)
        for same_role in self._by_role.values():
            same_role.discard(listener)
        same = self._by_user.get(listener.viewer.sub)
        if same is not None:
            same.discard(listener)
            if not same:
                del self._by_user[listener.viewer.sub]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._close_all()

    # -- the subscription ----------------------------------------------------------------------
    async def _subscribe(self) -> asyncio.Task[None]:
        # No retries inside redis-py: a silent reconnect would lose messages without telling us.
        client = aioredis.from_url(
            # On Redis Cluster, one node: a PUBLISH reaches the subscribers of every node.
            node_url(self._url), socket_connect_timeout=self._connect_timeout, socket_timeout=None,
            socket_keepalive=True, health_check_interval=30, retry=Retry(NoBackoff(), 0), protocol=2,
        )
        pubsub = client.pubsub()
        try:
            async with asyncio.timeout(self._connect_timeout):
                await pubsub.subscribe(CHANNEL)
                while (await pubsub.get_message(timeout=self._connect_timeout) or {}).get("type") != "subscribe":
                    pass  # the confirmation: from here on, every publish reaches us
        except (RedisError, OSError, TimeoutError) as exc:
            await _close_quietly(pubsub, client)
            log.warning("change feed: cannot subscribe to %s: %s", CHANNEL, exc)
            raise ChangesUnavailable(str(exc) or type(exc).__name__) from exc
        log.info("change feed: subscribed to %s", CHANNEL)
        return asyncio.create_task(self._run(pubsub, client), name="readside-change-feed")

    async def _run(self, pubsub: aioredis.client.PubSub, client: aioredis.Redis) -> None:
        try:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=30.0)
                if message is not None and message["type"] == "message":
                    await self.dispatch(_scopes(message["data"]))
        except (RedisError, OSError) as exc:
            log.warning("change feed lost (%s): closing %d stream(s)", exc, len(self._all))
        except Exception:
            log.exception("change feed failed: closing %d stream(s)", len(self._all))
        finally:
            self._close_all()
            await _close_quietly(pubsub, client)

    def _close_all(self) -> None:
        for listener in list(self._all):
            self.leave(listener)

    # -- routing -------------------------------------------------------------------------------
    async def dispatch(self, scopes: Iterable[str]) -> None:
        """Hand each scope to the listeners allowed to see it."""
        if not self._all:
            return
        threads: dict[str, list[str]] = {}  # thread id -> its scopes
        for scope in scopes:
            found = route(scope)
            if found is None:
                continue  # no read model declares it
            kind, key = found
            audience = kind.audience
            if audience == OWNER:
                for listener in self._by_user.get(key or "", ()):
                    listener.push(scope)
            elif audience == PARTICIPANTS:
                threads.setdefault(key or "", []).append(scope)
            elif audience == EVERYONE:
                for listener in self._all:
                    listener.push(scope)
            elif audience.startswith(ROLE):
                for listener in self._by_role.get(audience[len(ROLE):], ()):
                    listener.push(scope)
        if threads:
            for thread_id, users in (await self._who(list(threads))).items():
                for user in users:
                    for listener in self._by_user.get(user, ()):
                        for scope in threads[thread_id]:
                            listener.push(scope)

    async def _who(self, thread_ids: list[str]) -> dict[str, tuple[str, str]]:
        found = {}
        for t in thread_ids:
            if t in self._known:
                self._known.move_to_end(t)
                found[t] = self._known[t]
        missing = [t for t in dict.fromkeys(thread_ids) if t not in found]
        if missing:
            try:
                looked_up = await self._participants(missing)
            except Exception as exc:  # noqa: BLE001 - the feed must outlive a database hiccup
                # Participants' viewer:<sub> scopes still arrive for every change of their inbox.
                log.warning("change feed: participants of %d thread(s) unavailable: %s", len(missing), exc)
                looked_up = {}
            for thread_id, users in looked_up.items():  # a stub (not started) is not returned: asked again
                self._known[thread_id] = users
                found[thread_id] = users
            while len(self._known) > KNOWN_THREADS:
                self._known.popitem(last=False)
        return found


def _scopes(data: bytes) -> list[str]:
    """The scopes of one published bump: a JSON array of strings (``Cache.bump``). Anything else
    (a stale publisher's format, garbage) is dropped whole, never split into scopes."""
    try:
        scopes = orjson.loads(data)
    except orjson.JSONDecodeError:
        scopes = None
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        log.warning("change feed: dropped a message that is not a JSON array of scopes (%d bytes)", len(data))
        return []
    return scopes


async def _close_quietly(pubsub: aioredis.client.PubSub, client: aioredis.Redis) -> None:
    for closing in (pubsub.aclose, client.aclose):
        try:
            await closing()
        except (RedisError, OSError):
            pass
