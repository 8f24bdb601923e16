"""One stack per e2e module: its own database and topics, the projector, and the API as a real
uvicorn process, so requests cross real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import psycopg
import pytest

from readside.embedded import EmbeddedValkey
from readside.schemas.registry import contract_topics
from readside.shared.kafka import create_topics
from readside.shared.settings import Settings
from tests.conftest import InProcessProjector, _with_db
from tests.support import api_server


@dataclass
class Stack:
    settings: Settings
    base_url: str
    projector: InProcessProjector

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10.0)


@contextlib.contextmanager
def running_stack(bootstrap: str, pg_admin_url: str, logs: Path, redis_url: str | None = None,
                  cache_timeout: float | None = None, **overrides: object) -> Iterator[Stack]:
    name = f"rs_e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    unique = uuid.uuid4().hex[:10]
    settings = replace(
        Settings(),
        kafka_bootstrap=bootstrap,
        database_url=_with_db(pg_admin_url, name),
        redis_url=redis_url,
        topic_prefix=f"e{unique}.",
        group_prefix=f"g{unique}",
        jwt_secret="e2e-secret-0123456789-abcdefghijklmnop",
        cursor_secret="e2e-cursor-secret-0123456789-abcdefgh",
    )
    if cache_timeout is not None:
        settings = replace(settings, cache_timeout=cache_timeout)
    settings = replace(settings, **overrides)  # type: ignore[arg-type]
    asyncio.run(create_topics(bootstrap, contract_topics(settings.topic_prefix)))
    projector = InProcessProjector(settings).start()
    try:
        with api_server(settings.to_env(), logs, ready="/readyz", timeout=30) as (base_url, _):
            yield Stack(settings, base_url, projector)
    finally:
        projector.stop()
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def stack(bootstrap: str, pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(bootstrap, pg_admin_url, tmp_path_factory.mktemp("api")) as s:
        yield s


@pytest.fixture(scope="module")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    """A Valkey of the module's own: cache tests kill and restart it."""
    server = EmbeddedValkey(data_dir=tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.stop()
