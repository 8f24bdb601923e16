"""The suite's services as Docker containers (testcontainers): ``READSIDE_TEST_SERVICES=containers``.

Where Docker runs, the suite can test against the engines production uses, started fresh for the
session: Apache Kafka (KRaft, Confluent's image), PostgreSQL 15 and Redis 7, the versions of
``compose.yaml``. Install the extra first: ``pip install -e '.[test,containers]'``.

``READSIDE_TEST_SERVICES=embedded`` (the default) keeps the embedded broker and Valkey and the
local PostgreSQL. Anything else is refused at start with one line saying what to set; so is
``containers`` without testcontainers installed or without a Docker engine answering: a run that
asked for containers never falls back silently to other servers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHOICES = ("embedded", "containers")
KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"  # Apache Kafka 3.6, run in KRaft mode
POSTGRES_IMAGE = "postgres:15"
REDIS_IMAGE = "redis:7"


def choice() -> str:
    value = os.environ.get("READSIDE_TEST_SERVICES", "embedded").strip() or "embedded"
    if value not in CHOICES:
        raise pytest.UsageError(f"READSIDE_TEST_SERVICES={value!r}: use one of {', '.join(CHOICES)}")
    return value


def wanted() -> bool:
    return choice() == "containers"


def check() -> None:
    """At start: the choice is valid, and when it is containers, testcontainers is installed and the
    Docker engine answers. Raises ``pytest.UsageError`` naming the fix."""
    if not wanted():
        return
    try:
        import docker  # installed with testcontainers
        import testcontainers  # noqa: F401
    except ImportError:
        raise pytest.UsageError(
            "READSIDE_TEST_SERVICES=containers needs testcontainers: pip install -e '.[test,containers]' "
            "(or unset READSIDE_TEST_SERVICES to use the embedded servers)"
        ) from None
    try:
        docker.from_env().ping()
    except Exception as exc:  # noqa: BLE001 - whatever the client raises, the engine is not there
        raise pytest.UsageError(
            f"READSIDE_TEST_SERVICES=containers, but no Docker engine answers ({exc.__class__.__name__}: {exc}); "
            "start Docker (or set DOCKER_HOST), or unset READSIDE_TEST_SERVICES to use the embedded servers"
        ) from None


@contextmanager
def _running(container: Any) -> Iterator[Any]:
    container.start()
    try:
        yield container
    finally:
        container.stop()


@contextmanager
def kafka() -> Iterator[str]:
    from testcontainers.community.kafka import KafkaContainer

    with _running(KafkaContainer(KAFKA_IMAGE).with_kraft()) as container:
        yield container.get_bootstrap_server()


@contextmanager
def postgres() -> Iterator[str]:
    """An admin URL: tests create a database of their own through it."""
    from testcontainers.community.postgres import PostgresContainer

    with _running(PostgresContainer(POSTGRES_IMAGE, username="postgres", password="postgres", dbname="postgres")) as container:
        yield container.get_connection_url(driver=None)


@contextmanager
def redis() -> Iterator[str]:
    from testcontainers.community.redis import RedisContainer

    with _running(RedisContainer(REDIS_IMAGE)) as container:
        yield f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"
