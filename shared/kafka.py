"""Kafka helpers: topic creation and high watermarks, shared by projector, load and tests."""

from __future__ import annotations

import logging
from typing import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

__all__ = ["CONTRACT_TOPICS", "TOPIC_CONFIG", "create_topics"]

log = logging.getLogger(__name__)

CONTRACT_TOPICS = ("threads.events", "payments.events", "requests.events", "providers.events", "workflows.events")
# Workflow payloads reach 1 MB; replay needs full history (CONTRACT §3, ARCHITECTURE "Rebuild").
TOPIC_CONFIG = {"max.message.bytes": str(4 * 1024 * 1024), "retention.ms": "-1"}


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 3) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="readside-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in dict.fromkeys(names) if n not in existing]
        if not wanted:
            return []
        new = [NewTopic(n, num_partitions=partitions, replication_factor=1, topic_configs=TOPIC_CONFIG) for n in wanted]
        try:
            await admin.create_topics(new)
        except TopicAlreadyExistsError:
            pass  # another process won the race
        log.info("created topics %s", wanted)
        return wanted
    finally:
        await admin.close()
