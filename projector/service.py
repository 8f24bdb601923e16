"""The projector process: ``build(settings)`` wires pool, producer and one runner per projection."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Sequence

from aiokafka import AIOKafkaProducer

from projector.engine import OnCommit, ProjectionRunner
from projector.projection import Projection
from projector.projections import REGISTRY
from shared.db import migrate, open_pool
from shared.errors import ConfigError
from shared.kafka import create_topics
from shared.settings import Settings

__all__ = ["run_projector", "select"]

log = logging.getLogger(__name__)


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
    """Run until ``stop`` is set (or SIGTERM/SIGINT when no event is given)."""
    projections = select(names)
    await asyncio.to_thread(migrate, settings.database_url, projections)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    topics = [settings.topic_prefix + t for p in projections for t in p.topics]
    await create_topics(settings.kafka_bootstrap, [t + ".dlq" for t in topics])
    pool = await open_pool(settings.database_url, min_size=1, max_size=len(projections) + 2, timeout=30.0)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, max_request_size=4 * 1024 * 1024, acks="all"
    )
    await producer.start()
    try:
        runners = [ProjectionRunner(settings, p, pool, producer, on_commit) for p in projections]
        log.info("projector running: %s", ", ".join(p.name for p in projections))
        await asyncio.gather(*(r.run(stop) for r in runners))
    finally:
        await producer.stop()
        await pool.close()
        log.info("projector stopped")
