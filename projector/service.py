"""The projector process: ``build(settings)`` wires pool, producer and one runner per projection."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Sequence

import psycopg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from readside.projector.engine import OnCommit, ProjectionRunner
from readside.readmodels.base import Projection
from readside.readmodels.registry import REGISTRY
from readside.shared.cache import Cache, CacheDown
from readside.shared.db import migrate, open_pool
from readside.shared.errors import ConfigError, RetryableError
from readside.shared.kafka import create_topics
from readside.shared.settings import Settings

__all__ = ["Invalidator", "run_projector", "select"]

log = logging.getLogger(__name__)

# The dead-letter producer's largest request: a dead letter past it (a record near the topics'
# 4 MiB plus its headers) is kept whole in `dead_letters` and announced by a pointer record.
PRODUCER_MAX_REQUEST = 4 * 1024 * 1024


def select(names: Sequence[str] | None) -> list[Projection]:
    if not names:
        return list(REGISTRY.values())
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ConfigError(f"unknown projection(s) {unknown}; known: {sorted(REGISTRY)}")
    return [REGISTRY[n] for n in names]


class Invalidator:
    """After each commit, bump the cache versions of what changed (ARCHITECTURE invariant 8).

    If Redis is down the keys wait in ``pending`` and are retried every second; cached bodies
    also expire (TTL), which bounds staleness if this process dies with bumps pending.
    """

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.pending: set[str] = set()

    async def __call__(self, projection: str, keys: set[str]) -> None:
        self.pending |= keys
        await self.flush()

    async def flush(self) -> None:
        if not self.pending:
            return
        keys, self.pending = self.pending, set()
        try:
            await self.cache.bump(keys)
        except CacheDown:
            self.pending |= keys
            log.warning("cache down: %d version bump(s) pending", len(self.pending))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                await self.flush()
        await self.flush()


async def run_projector(
    settings: Settings,
    names: Sequence[str] | None = None,
    stop: asyncio.Event | None = None,
    on_commit: OnCommit | None = None,
) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT when no event is given)."""
    projections = select(names)
    if not settings.projector_port:
        return await _run(settings, projections, stop, on_commit, None)
    from readside.projector import http

    sock = http.bind(settings)  # first: a port in use fails the start, not the first probe
    try:
        await _run(settings, projections, stop, on_commit, sock)
    finally:
        sock.close()


def _where(url: str) -> str:
    """host:port/dbname of a libpq URL or conninfo, without the password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparseable READSIDE_DATABASE_URL)"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


async def _until_up(stop: asyncio.Event, what: str, attempt: Callable[[], Awaitable[object]]) -> bool:
    """Run ``attempt`` until it succeeds (True) or ``stop`` is set (False), with backoff."""
    delay = 0.5
    while not stop.is_set():
        try:
            await attempt()
            return True
        except (psycopg.OperationalError, KafkaError, OSError, RetryableError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("waiting for %s: %s; retrying in %.1f s (start it, or fix the setting)", what, first, delay)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, 10.0)
    return False


async def _run(
    settings: Settings,
    projections: list[Projection],
    stop: asyncio.Event | None,
    on_commit: OnCommit | None,
    sock: socket.socket | None,
) -> None:
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    # A projector started before its database or broker waits for them (a deployment's start order
    # is not ours to choose), saying what it waits for; a stop while waiting is a clean exit.
    database = f"PostgreSQL at {_where(settings.database_url)} (READSIDE_DATABASE_URL)"
    broker = f"the Kafka broker at {settings.kafka_bootstrap} (READSIDE_KAFKA_BOOTSTRAP)"
    if not await _until_up(stop, database, lambda: asyncio.to_thread(migrate, settings.database_url, projections)):
        return
    topics = [settings.topic_prefix + t for p in projections for t in p.topics]
    if not await _until_up(stop, broker, lambda: create_topics(settings.kafka_bootstrap, [t + ".dlq" for t in topics])):
        return
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, max_request_size=PRODUCER_MAX_REQUEST, acks="all"
    )
    if not await _until_up(stop, broker, producer.start):
        return
    # a connection per runner, one for the dedupe cleanup or a retry, one for the status monitor
    pool = await open_pool(settings.database_url, min_size=1, max_size=len(projections) + 3, timeout=30.0)
    cache = Cache(settings.redis_url, timeout=settings.cache_timeout) if settings.redis_url else None
    tasks = []
    if cache is not None and on_commit is None:
        invalidator = Invalidator(cache)
        on_commit = invalidator
        tasks.append(invalidator.run(stop))
    try:
        runners = [ProjectionRunner(settings, p, pool, producer, on_commit) for p in projections]
        if sock is not None:
            from readside.projector import http

            monitor = http.Monitor(settings, [p.name for p in projections], runners)
            tasks += [monitor.run(pool, stop), http.serve(http.build_app(monitor), sock, stop)]
            log.info("projector endpoint on http://%s:%d (/healthz, /readyz, /metrics)", *sock.getsockname()[:2])
        log.info("projector running: %s", ", ".join(p.name for p in projections))
        await asyncio.gather(*(r.run(stop) for r in runners), *tasks)
    finally:
        await producer.stop()
        await pool.close()
        if cache is not None:
            await cache.close()
        log.info("projector stopped")
