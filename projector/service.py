"""The projector process: ``build(settings)`` wires pool, producer and one runner per projection."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import psycopg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from readside.projector.engine import STOP_STEP_SECONDS, OnCommit, ProjectionRunner, bounded
from readside.projector.outbox import Invalidator
from readside.readmodels.base import Projection
from readside.readmodels.registry import REGISTRY
from readside.shared.cache import Cache
from readside.shared.db import migrate, open_pool
from readside.shared.errors import ConfigError, RetryableError
from readside.shared.kafka import create_topics
from readside.shared.processes import collect_for_batches
from readside.shared.settings import Settings

__all__ = ["run_projector", "select"]

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


async def run_projector(
    settings: Settings,
    names: Sequence[str] | None = None,
    stop: asyncio.Event | None = None,
    on_commit: OnCommit | None = None,
) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT when no event is given). Sets the process's
    garbage collector for batches (``readside.shared.processes.collect_for_batches``)."""
    collect_for_batches()
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


STOP_REPORT_SECONDS = 15.0


# Libraries' own background tasks (fetchers, heartbeats, pool workers) wait by design: not named.
_IDLE_BY_DESIGN = ("aiokafka.", "psycopg", "asyncio.", "uvicorn.", "redis.")


def _awaiting(task: asyncio.Task) -> str | None:
    """Where ``task`` waits: its chain of awaits, outermost first (``task.get_stack`` gives one
    frame for a suspended coroutine); None for a library's own background task."""
    parts: list[str] = []
    coro: object = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        if not parts and str(frame.f_globals.get("__name__", "")).startswith(_IDLE_BY_DESIGN):
            return None
        parts.append(f"{frame.f_code.co_qualname} ({os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno})")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " -> ".join(parts) or repr(task)


async def _report_slow_stop(stop: asyncio.Event) -> None:
    """Once stopping, say so; if the stop takes long, say every ``STOP_REPORT_SECONDS`` what it waits on."""
    await stop.wait()
    log.info("stopping: finishing the batches in flight, then leaving the consumer groups")
    began = asyncio.get_running_loop().time()
    while True:
        await asyncio.sleep(STOP_REPORT_SECONDS)
        me = asyncio.current_task()
        waits = Counter(w for t in asyncio.all_tasks() if t is not me and (w := _awaiting(t)) is not None)
        log.warning("still stopping after %.0f s; waiting in:\n  %s", asyncio.get_running_loop().time() - began,
                    "\n  ".join(f"{w}{f' (x{n})' if n > 1 else ''}" for w, n in sorted(waits.items())))


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
    reporter = asyncio.create_task(_report_slow_stop(stop))
    try:
        await _serve(settings, projections, stop, on_commit, sock)
    finally:
        reporter.cancel()


async def _serve(
    settings: Settings,
    projections: list[Projection],
    stop: asyncio.Event,
    on_commit: OnCommit | None,
    sock: socket.socket | None,
) -> None:
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
    # a connection per runner, one for the dedupe cleanup or a retry, one for the status monitor,
    # one for the cache outbox's relay
    pool = await open_pool(settings.database_url, min_size=1, max_size=len(projections) + 4, timeout=30.0)
    cache = Cache(settings.redis_url, timeout=settings.cache_timeout) if settings.redis_url else None
    tasks = []
    outbox = False
    if cache is not None and on_commit is None:
        invalidator = Invalidator(cache, pool)
        on_commit, outbox = invalidator, True
        tasks.append(invalidator.run(stop))
    try:
        runners = [ProjectionRunner(settings, p, pool, producer, on_commit, outbox=outbox) for p in projections]
        if sock is not None:
            from readside.projector import http

            monitor = http.Monitor(settings, [p.name for p in projections], runners)
            tasks += [monitor.run(pool, stop), http.serve(http.build_app(monitor), sock, stop)]
            log.info("projector endpoint on http://%s:%d (/healthz, /readyz, /metrics)", *sock.getsockname()[:2])
        log.info("projector running: %s", ", ".join(p.name for p in projections))
        await asyncio.gather(*(r.run(stop) for r in runners), *tasks)
    finally:
        await bounded(producer.stop(), STOP_STEP_SECONDS, "the dead-letter producer's stop")
        await pool.close()  # bounded by psycopg_pool (5 s)
        if cache is not None:
            await cache.close()
        log.info("projector stopped")
