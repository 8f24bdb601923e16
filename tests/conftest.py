"""Real services for the suite, chosen per run.

``READSIDE_TEST_SERVICES=containers`` runs all three as Docker containers (``tests/containers.py``:
Apache Kafka, PostgreSQL 15, Redis 7; needs Docker and the ``containers`` extra). Otherwise:

- Broker: ``READSIDE_TEST_KAFKA_BOOTSTRAP`` if set, else the embedded tansu broker (one per
  session: joining a group on it takes seconds).
- PostgreSQL: ``READSIDE_TEST_DATABASE_URL`` (an admin URL) if set, else the local server on
  127.0.0.1:5432 if it answers, else an embedded PostgreSQL. Each test gets a database of its own.
- Redis: ``READSIDE_TEST_REDIS_URL`` if set, else an embedded Valkey.
Each test gets its own topic prefix and consumer-group prefix, so tests never see each other.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from readside.embedded import EmbeddedBroker, EmbeddedPostgres
from readside.schemas.registry import contract_topics
from readside.shared.kafka import create_topics
from readside.shared.settings import Settings
from tests import containers

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def pytest_configure(config: pytest.Config) -> None:
    containers.check()  # a bad READSIDE_TEST_SERVICES, or containers without Docker: one line, no run


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("READSIDE_TEST_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    if containers.wanted():
        with containers.kafka() as url:
            yield url
        return
    broker = EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log")
    yield broker.start()
    broker.stop()


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("READSIDE_TEST_DATABASE_URL")
    if configured:
        yield configured
    elif containers.wanted():
        with containers.postgres() as url:
            yield url
    elif _answers(LOCAL_PG):
        yield LOCAL_PG
    else:
        # Outside pytest's tmp tree, which pytest re-chmods to 0700 (the server runs unprivileged).
        data = Path(tempfile.mkdtemp(prefix="readside-test-pg-"))
        pg = EmbeddedPostgres(data / "pg")
        yield pg.start()
        pg.stop()
        shutil.rmtree(data, ignore_errors=True)


def _with_db(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


@pytest.fixture
def db_url(pg_admin_url: str) -> Iterator[str]:
    name = f"rs_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _with_db(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(bootstrap: str, db_url: str) -> Settings:
    unique = uuid.uuid4().hex[:10]
    s = replace(
        Settings(),
        kafka_bootstrap=bootstrap,
        database_url=db_url,
        topic_prefix=f"t{unique}.",
        group_prefix=f"g{unique}",
        jwt_secret="test-secret-0123456789-abcdefghijklmnop",
        cursor_secret="test-cursor-secret-0123456789-abcdefgh",
        batch_max=500,
    )
    asyncio.run(create_topics(bootstrap, contract_topics(s.topic_prefix)))
    return s


class InProcessProjector:
    """The projector on a background thread with its own event loop; ``stop()`` is graceful."""

    def __init__(self, settings: Settings, names: list[str] | None = None) -> None:
        self.settings = settings
        self.names = names
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        from readside.projector.service import run_projector

        async def go() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await run_projector(self.settings, self.names, stop=self._stop)

        try:
            asyncio.run(go())
        except BaseException as exc:  # noqa: BLE001 - re-raised in stop()
            self.error = exc
            self._ready.set()

    def start(self) -> InProcessProjector:
        self._thread.start()
        self._ready.wait(30)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "projector did not stop within 60 s"
        if self.error is not None:
            raise self.error


@pytest.fixture
def projector(settings: Settings) -> Iterator[InProcessProjector]:
    runner = InProcessProjector(settings).start()
    yield runner
    runner.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``READSIDE_TEST_REDIS_URL`` if set, else an embedded Valkey of the session's own."""
    configured = os.environ.get("READSIDE_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    if containers.wanted():
        with containers.redis() as url:
            yield url
        return
    from readside.embedded import EmbeddedValkey

    server = EmbeddedValkey(data_dir=tmp_path_factory.mktemp("valkey"))
    yield server.start()
    server.stop()
