"""The embedded servers, used for real; and the load generator against the embedded broker."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from readside.embedded import EmbeddedBroker, EmbeddedPostgres, EmbeddedServerError, EmbeddedValkey, free_port
from readside.load import TOPICS, ensure_topics, publish, run_load, thread_stream
from readside.shared.errors import BrokerUnavailable


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "broker.log") as server:
        yield server


def unique(name: str) -> str:
    return f"test-{name}-{uuid.uuid4().hex[:8]}."


async def consume_all(bootstrap: str, topics: list[str], expected: int, partitions: int = 3,
                      timeout: float = 20.0) -> list[tuple[str, bytes, bytes]]:
    """Read every record of ``topics`` from the beginning by manual assignment (no group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                group_id=None, auto_offset_reset="earliest")
    records: list[tuple[str, bytes, bytes]] = []
    await consumer.start()
    try:
        consumer.assign([TopicPartition(t, p) for t in topics for p in range(partitions)])
        await consumer.seek_to_beginning()
        deadline = asyncio.get_running_loop().time() + timeout
        while len(records) < expected and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            for batch in batches.values():
                records += [(m.topic, m.key, m.value) for m in batch]
        # nothing beyond what we expect
        batches = await consumer.getmany(timeout_ms=500)
        records += [(m.topic, m.key, m.value) for batch in batches.values() for m in batch]
    finally:
        await consumer.stop()
    return records


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 < port < 65536


def test_broker_creates_topics_and_round_trips_a_record(broker: EmbeddedBroker) -> None:
    topic = unique("roundtrip") + "events"

    async def scenario() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
            assert topic in await admin.list_topics()
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b'{"hello": 1}', key=b"k-1")
        finally:
            await producer.stop()
        [(_, key, value)] = await consume_all(broker.bootstrap, [topic], 1, partitions=1)
        assert (key, value) == (b"k-1", b'{"hello": 1}')

    asyncio.run(scenario())


def test_broker_start_returns_the_bootstrap_and_stop_frees_the_port(tmp_path: Path) -> None:
    server = EmbeddedBroker(log_path=tmp_path / "broker.log")
    assert server.start() == server.bootstrap == f"127.0.0.1:{server.port}"
    assert server.start() == server.bootstrap  # idempotent
    server.stop()
    server.stop()  # idempotent
    with EmbeddedBroker(port=server.port, log_path=tmp_path / "again.log") as again:
        assert again.bootstrap == server.bootstrap


def test_broker_on_a_taken_port_fails_with_the_log(broker: EmbeddedBroker, tmp_path: Path) -> None:
    with pytest.raises(EmbeddedServerError, match="already in use"):
        EmbeddedBroker(port=broker.port, log_path=tmp_path / "taken.log").start()


@pytest.fixture
def pg_dir() -> Iterator[Path]:
    # Not under pytest's tmp tree: pytest re-chmods its root to 0700 at every session start,
    # which locks the unprivileged postgres user out when sessions overlap.
    path = Path(tempfile.mkdtemp(prefix="readside-test-pg-"))
    yield path / "pg"
    shutil.rmtree(path, ignore_errors=True)


def test_postgres_answers_and_reuses_its_data_dir(pg_dir: Path) -> None:
    server = EmbeddedPostgres(pg_dir)
    url = server.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
            conn.execute("create table kept (x int4)")
            conn.execute("insert into kept values (42)")
    finally:
        server.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2).close()

    with EmbeddedPostgres(pg_dir) as again:
        with psycopg.connect(again.url) as conn:
            assert conn.execute("select x from kept").fetchone() == (42,)


def test_valkey_set_get_kill_restart(tmp_path: Path) -> None:
    server = EmbeddedValkey(data_dir=tmp_path / "valkey")
    url = server.start()
    assert url == f"redis://127.0.0.1:{server.port}/0"
    try:
        with redis.Redis.from_url(url) as client:
            client.set("greeting", "hello")
            assert client.get("greeting") == b"hello"
        server.kill()
        with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
            with pytest.raises(redis.ConnectionError):
                client.ping()
        assert server.restart() == url
        with redis.Redis.from_url(url) as client:
            assert client.get("greeting") is None  # no persistence
            client.set("greeting", "again")
            assert client.get("greeting") == b"again"
    finally:
        server.stop()
    assert server.log_path.exists()


def test_ensure_topics_then_publish_a_thread_stream(broker: EmbeddedBroker) -> None:
    prefix = unique("load")
    records = thread_stream(threads=25, seed=9)
    expected = Counter(prefix + r.topic for r in records)
    calls: list[tuple[int, int]] = []

    async def scenario() -> list[tuple[str, bytes, bytes]]:
        await ensure_topics(broker.bootstrap, prefix)
        await ensure_topics(broker.bootstrap, prefix)  # idempotent
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            names = set(await admin.list_topics())
        finally:
            await admin.close()
        assert {prefix + t + s for t in TOPICS for s in ("", ".dlq")} <= names
        sent = await publish(records, bootstrap=broker.bootstrap, prefix=prefix,
                             progress=lambda done, total: calls.append((done, total)))
        assert sent == len(records)
        return await consume_all(broker.bootstrap, list(expected), len(records))

    consumed = asyncio.run(scenario())
    assert Counter(topic for topic, _, _ in consumed) == expected
    assert calls[-1] == (len(records), len(records))
    by_id = {r.value["event_id"]: r for r in records}
    for _topic, key, value in consumed:
        envelope = orjson.loads(value)
        assert key.decode() == by_id[envelope["event_id"]].key
        assert envelope == by_id[envelope["event_id"]].value


def test_publish_honours_the_rate(broker: EmbeddedBroker) -> None:
    records = thread_stream(threads=2, messages_per_thread=(5, 5), seed=1)[:20]

    async def scenario() -> float:
        prefix = unique("rate")
        await ensure_topics(broker.bootstrap, prefix)
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert await publish(records, bootstrap=broker.bootstrap, prefix=prefix, rate=40) == 20
        return loop.time() - began

    assert asyncio.run(scenario()) >= 19 / 40


def test_run_load_streams_live_events_until_stopped(broker: EmbeddedBroker) -> None:
    prefix = unique("live")

    async def scenario() -> tuple[int, list[tuple[str, bytes, bytes]]]:
        await ensure_topics(broker.bootstrap, prefix)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.5, stop.set)
        sent = await run_load(bootstrap=broker.bootstrap, prefix=prefix, rate=100, stop=stop, seed=4)
        topics = [prefix + t for t in TOPICS]
        return sent, await consume_all(broker.bootstrap, topics, sent)

    sent, consumed = asyncio.run(scenario())
    assert 100 <= sent <= 200
    assert len(consumed) == sent
    types = Counter(orjson.loads(value)["type"] for _, _, value in consumed)
    assert types["message.created"] > 0 and types["thread.started"] > 0


def test_run_load_stops_after_its_duration(broker: EmbeddedBroker) -> None:
    prefix = unique("duration")

    async def scenario() -> int:
        await ensure_topics(broker.bootstrap, prefix)
        return await run_load(bootstrap=broker.bootstrap, prefix=prefix, rate=50, duration=0.5)

    assert 20 <= asyncio.run(scenario()) <= 40


def test_ensure_topics_without_a_broker_says_what_to_do() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(BrokerUnavailable) as caught:
        asyncio.run(ensure_topics(f"127.0.0.1:{port}", unique("none")))
    assert f"cannot reach the Kafka broker at 127.0.0.1:{port}" in str(caught.value)
    assert "READSIDE_KAFKA_BOOTSTRAP" in str(caught.value)
