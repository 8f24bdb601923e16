"""Redis (or Valkey) Cluster: the URL, the client, and the projections' generations kept in process.

Cluster mode is chosen by the URL's scheme: ``redis+cluster://[user:password@]host:port[,host:port...]``
(``rediss+cluster://`` for TLS) names one or more nodes to start from; the client discovers the
others (redis-py's asyncio ``RedisCluster``, which routes each command by its hash slot). Every
key one request reads besides the generation is in its scope's slot (``readside.shared.cache``);
a multi-key command across slots is refused by the client, so a mistake fails loudly. A bump is
a pipeline (redis-py sends each node its scopes), then the PUBLISH; a PUBLISH reaches the
subscribers of every node, so ``/v1/events`` and ``Generations`` subscribe on one node.

The generation ``rs:g:<projection>`` is the one key outside the scope's slot, and every request
reads it: an API process keeps each projection's generation in process (``Generations``), read
from Redis at most ``REFRESH`` seconds before it is used, and forgotten at once on a message on
``GENERATION_CHANNEL`` naming the projection (``Cache.publish_generation`` sends one).

That refresh interval must not let a body of the previous generation's tables be served after a
cutover, so a cutover has two phases (``readside.projector.cutover``):
1. before its transaction it sets the generation to ``PENDING`` and waits ``PENDING_WAIT`` (more
   than ``REFRESH``): from then on no process uses the generation it kept. A process whose
   generation is ``PENDING`` serves the projection from PostgreSQL (the generation, the version,
   the ETag and the body from one statement, as without Redis), and so does one that cannot read
   the generation;
2. after the swap commits it publishes the new generation (``publish_generation``); a cutover that
   fails deletes the marker (``Cache.publish_generation(p, None)``: the API copies PostgreSQL's generation
   again). A cutover killed in between leaves it pending — served from PostgreSQL — until the
   command is run again.
On a single server none of this applies: every request reads the generation with its version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisError

from readside.shared.flights import shared_call

__all__ = ["GENERATION_CHANNEL", "PENDING", "REFRESH", "Generations", "cluster_client", "cluster_nodes", "node_url"]

log = logging.getLogger(__name__)

SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme -> TLS
GENERATION_CHANNEL = "rs:generation"
PENDING = b"pending"  # the value of ``rs:g:<projection>`` while a cutover is announced
REFRESH = 0.5  # seconds a generation read from Redis is used in process, at most
PENDING_WAIT = REFRESH * 2 + 0.5  # a cutover waits this long after announcing itself


def cluster_nodes(url: str) -> list[tuple[str, int]] | None:
    """The ``(host, port)`` nodes a cluster URL names; None for a URL of a single server."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        return None
    nodes = []
    for node in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = node.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a Redis Cluster URL names nodes as host:port, comma-separated; got {node!r}")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


def node_url(url: str, index: int = 0) -> str:
    """A single-server URL of the ``index``-th node a cluster URL names (modulo their number), for a
    subscription (a PUBLISH reaches the subscribers of every node); any other URL as it is."""
    nodes = cluster_nodes(url)
    if nodes is None:
        return url
    parts = urlsplit(url)
    host, port = nodes[index % len(nodes)]
    auth = parts.netloc.rpartition("@")[0]
    host = f"[{host}]" if ":" in host else host
    return f"{'rediss' if SCHEMES[parts.scheme] else 'redis'}://{auth + '@' if auth else ''}{host}:{port}"


def cluster_client(url: str, **kwargs: object) -> RedisCluster:
    """redis-py's asyncio cluster client for a cluster URL (``cluster_nodes``)."""
    parts = urlsplit(url)
    nodes = cluster_nodes(url)
    if nodes is None:
        raise ValueError("not a Redis Cluster URL (redis+cluster://host:port,...)")
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ssl=SCHEMES[parts.scheme],
        **kwargs,  # type: ignore[arg-type]
    )


Generation = int | bytes | None  # a generation, PENDING, or None: Redis holds none


class Generations:
    """Each projection's generation, read by ``read(projection)`` (raises ``CacheDown``) at most
    ``REFRESH`` seconds before it is used; one read at a time per projection."""

    def __init__(self, read: Callable[[str], Awaitable[bytes | None]], url: str) -> None:
        self._read = read
        self._url = url
        self._known: dict[str, tuple[float, Generation]] = {}  # projection -> (used until, value)
        self._reading: dict[str, asyncio.Future[Generation]] = {}
        self._listener: asyncio.Task[None] | None = None

    async def get(self, projection: str) -> Generation:
        known = self._known.get(projection)
        if known is not None and known[0] > time.monotonic():
            return known[1]
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="readside-generations")

        async def read() -> Generation:
            sent = time.monotonic()  # the value is as old as the moment it was asked for
            return self.learn(projection, await self._read(projection), sent)

        return await shared_call(self._reading, projection, read)

    def learn(self, projection: str, raw: bytes | int | None, sent: float) -> Generation:
        """The value Redis held at ``sent`` (monotonic); kept until ``sent + REFRESH``."""
        value: Generation = None if raw is None else PENDING if raw == PENDING else int(raw)
        if value is None:
            self._known.pop(projection, None)  # none yet: adopted from PostgreSQL, then read again
        else:
            self._known[projection] = (sent + REFRESH, value)
        return value

    def forget(self, projection: str) -> None:
        self._known.pop(projection, None)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None

    async def _listen(self) -> None:
        """Forget a projection's generation when a cutover publishes it (any node of the cluster
        delivers every PUBLISH). Lost: tried again each second, on the next node; meanwhile
        ``REFRESH`` bounds how long a generation is kept."""
        attempt = 0
        while True:
            client = aioredis.from_url(node_url(self._url, attempt), socket_connect_timeout=1.0, protocol=2,
                                       health_check_interval=30)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(GENERATION_CHANNEL)
                self._known.clear()  # messages may have been missed before this subscription
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is not None and message["type"] == "message":
                        self.forget(message["data"].decode())
            except (RedisError, OSError) as exc:
                log.info("generation channel lost (%s)", exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                    await client.aclose()
            attempt += 1
            await asyncio.sleep(1.0)
