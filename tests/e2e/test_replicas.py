"""Read replicas over HTTP: a primary and two real streaming replicas of its own (initdb,
``pg_basebackup -R``: tests/replication.py), the projector writing the primary, the API
(``READSIDE_DATABASE_REPLICA_URLS``) as a uvicorn process.

What a user of the API checks: plain reads come from the replicas (the metric, and a paused
replica's older rows); a read-your-writes request never gets an answer without its write, whether
the replicas are paused or stopped; an ETag always names the body it came with; no 5xx, ever."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import orjson
import pytest

from readside.schemas.registry import contract_topics
from readside.shared.kafka import create_topics
from readside.shared.settings import Settings
from tests.conftest import InProcessProjector
from tests.replication import Cluster, Server
from tests.support import Record, api_server, auth, message, send, started, wait_caught_up, wait_until

TOPICS = ("threads.events", "payments.events")


@dataclass
class ReplicatedStack:
    settings: Settings
    base_url: str
    cluster: Cluster
    dbname: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10.0)

    def caught_up(self) -> None:
        """The projector has reached the broker's heads, and every running replica has replayed it."""
        s = self.settings
        wait_caught_up(s.database_url, s.kafka_bootstrap, "threads", [s.topic_prefix + t for t in TOPICS])
        for replica in self.cluster.replicas:
            if replica.running:
                self.cluster.caught_up(replica)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    made = Cluster()
    try:
        made.start_primary()
        made.add_replica()
        made.add_replica()
        yield made
    finally:
        made.close()


@contextlib.contextmanager
def _replicated_stack(bootstrap: str, cluster: Cluster, logs: Path, redis_url: str | None = None) -> Iterator[ReplicatedStack]:
    assert cluster.primary is not None
    name = f"rs_repl_{uuid.uuid4().hex[:12]}"
    cluster.primary.execute(f'CREATE DATABASE "{name}"')
    unique = uuid.uuid4().hex[:10]
    settings = replace(
        Settings(),
        kafka_bootstrap=bootstrap,
        database_url=cluster.primary.url(name),
        database_replica_urls=tuple(r.url(name) for r in cluster.replicas),
        replica_max_lag=600.0,  # a paused replica keeps answering plain reads (what the tests look at)
        redis_url=redis_url,
        cache_timeout=2.0,
        topic_prefix=f"r{unique}.",
        group_prefix=f"g{unique}",
        jwt_secret="e2e-secret-0123456789-abcdefghijklmnop",
        cursor_secret="e2e-cursor-secret-0123456789-abcdefgh",
    )
    asyncio.run(create_topics(bootstrap, contract_topics(settings.topic_prefix)))
    projector = InProcessProjector(settings).start()
    try:
        with api_server(settings.to_env(), logs, ready="/readyz", timeout=30) as (base_url, _):
            stack = ReplicatedStack(settings, base_url, cluster, name)
            wait_until(lambda: _tables_on_replicas(cluster, name), 60, "the read tables on the replicas")
            yield stack
    finally:
        projector.stop()


@pytest.fixture(scope="module")
def replicated(bootstrap: str, cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicatedStack]:
    with _replicated_stack(bootstrap, cluster, tmp_path_factory.mktemp("api")) as stack:
        yield stack


def _tables_on_replicas(cluster: Cluster, name: str) -> bool:
    return all(r.execute("SELECT to_regclass('thread_previews') IS NOT NULL", name)[0][0] for r in cluster.replicas)


@contextlib.contextmanager
def paused(*replicas: Server) -> Iterator[None]:
    """Replay paused on ``replicas`` (they still receive the WAL, and answer queries)."""
    for r in replicas:
        r.execute("SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        for r in replicas:
            if r.running:
                r.execute("SELECT pg_wal_replay_resume()")


def produce(settings: Settings, rec: Record) -> str:
    """Publish ``rec``; its read-your-writes token (``topic:partition:offset``)."""

    async def go() -> str:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            meta = await producer.send_and_wait(settings.topic_prefix + rec.topic, orjson.dumps(rec.value), key=rec.key.encode())
            return f"{meta.topic}:{meta.partition}:{meta.offset}"
        finally:
            await producer.stop()

    return asyncio.run(go())


def replica_reads(http: httpx.Client) -> float:
    text = http.get("/metrics").text
    return sum(float(v) for v in re.findall(r'^readside_replica_reads_total\{replica="replica-\d"\} (\S+)$', text, re.M))


def preview(response: httpx.Response) -> str | None:
    assert response.status_code == 200, (response.status_code, response.text)
    return response.json()["items"][0]["last_message_preview"]


class Tags:
    """Every (ETag, body) the API sent: one ETag must always come with one body."""

    def __init__(self) -> None:
        self.seen: dict[str, bytes] = {}

    def check(self, response: httpx.Response) -> httpx.Response:
        assert response.status_code in (200, 304), (response.status_code, response.text)
        if response.status_code == 200:
            tag = response.headers["etag"]
            assert self.seen.setdefault(tag, response.content) == response.content, f"{tag} came with two bodies"
        return response


def test_plain_reads_come_from_replicas_and_read_your_writes_never_from_a_paused_one(replicated: ReplicatedStack) -> None:
    s, cluster, tags = replicated.settings, replicated.cluster, Tags()
    user = auth(replicated, "u-paused")
    send(s, [started("paused", client="u-paused", provider="u-pro", at=0)])
    replicated.caught_up()
    with replicated.client() as http:
        before_reads = replica_reads(http)
        first = tags.check(http.get("/v1/threads/preview", headers=user))
        assert preview(first) is None
        assert replica_reads(http) > before_reads  # answered by a replica
        with paused(*cluster.replicas):
            # Events flow while every replica's replay is paused: each read-your-writes request
            # sees its own write (the primary answers), a plain one the replicas' older rows.
            for i in range(1, 6):
                token = produce(s, message("paused", f"m{i}", i, sender="u-pro", sender_type="provider", content=f"paused {i}"))
                r = tags.check(http.get("/v1/threads/preview", headers=user | {"X-Readside-After": token}))
                assert r.headers["x-readside-consistency"] == "caught-up"
                assert preview(r) == f"paused {i}"
                # Without an ETag: a paused replica's older rows, under their own version's ETag.
                plain = tags.check(http.get("/v1/threads/preview", headers=user))
                assert preview(plain) is None and plain.headers["etag"] == first.headers["etag"]
                # With the ETag of that older version: confirmed (it names exactly those rows).
                old = http.get("/v1/threads/preview", headers=user | {"If-None-Match": first.headers["etag"]})
                assert old.status_code == 304 and old.headers["etag"] == first.headers["etag"]
                # With the fresh ETag: the client has seen newer rows than the replicas hold, so the
                # primary answers — never back in time (here: a 304 of the fresh version).
                fresh = http.get("/v1/threads/preview", headers=user | {"If-None-Match": r.headers["etag"]})
                assert fresh.status_code == 304 and fresh.headers["etag"] == r.headers["etag"]
                # A forged "newer" ETag does not send reads to the primary: the replica answers.
                forged = r.headers["etag"].replace(".", ".9", 1)
                assert preview(tags.check(http.get("/v1/threads/preview", headers=user | {"If-None-Match": forged}))) is None
        replicated.caught_up()
        # Replay resumed: the replicas catch up and answer the latest rows.
        wait_until(lambda: preview(tags.check(http.get("/v1/threads/preview", headers=user))) == "paused 5", 30,
                   "the replicas to answer the latest rows")


def test_read_your_writes_is_answered_by_a_replica_that_has_replayed_the_commit(replicated: ReplicatedStack) -> None:
    s, tags = replicated.settings, Tags()
    user = auth(replicated, "u-replayed")
    send(s, [started("replayed", client="u-replayed", provider="u-pro", at=0)])
    replicated.caught_up()
    token = produce(s, message("replayed", "m1", 1, sender="u-pro", sender_type="provider", content="replayed 1"))
    replicated.caught_up()
    # A later batch on the same partition: the checkpoint now records a WAL position covering m1.
    send(s, [message("replayed", "m2", 2, sender="u-pro", sender_type="provider", content="replayed 2")])
    replicated.caught_up()
    assert replicated.cluster.primary is not None
    topic, part, offset = token.rsplit(":", 2)
    covers, lsn = replicated.cluster.primary.execute(
        f"SELECT wal_covers, wal_lsn::text FROM checkpoints WHERE projection = 'threads' AND topic = '{topic}' "
        f"AND partition = {int(part)}", replicated.dbname)[0]
    assert covers > int(offset) and lsn is not None  # the later batch's statement vouches for m1's commit
    with replicated.client() as http:

        def from_a_replica() -> bool:
            before = replica_reads(http)
            r = tags.check(http.get("/v1/threads/preview", headers=user | {"X-Readside-After": token}))
            assert r.headers["x-readside-consistency"] == "caught-up"
            assert preview(r) == "replayed 2"  # at least m1; m2 too, since every replica has it
            return replica_reads(http) > before

        wait_until(from_a_replica, 20, "a replica to answer the read-your-writes request")


def test_a_stopped_replica_costs_no_error(replicated: ReplicatedStack) -> None:
    s, cluster, tags = replicated.settings, replicated.cluster, Tags()
    user = auth(replicated, "u-stopped")
    send(s, [started("stopped", client="u-stopped", provider="u-pro", at=0)])
    replicated.caught_up()
    with replicated.client() as http:
        for _ in range(8):  # warm: pooled connections to both replicas
            tags.check(http.get("/v1/threads/preview", headers=user))
        stopped = cluster.replicas[1]
        stopped.stop("immediate")  # as a crash: its connections die without a word
        try:
            for i in range(1, 4):
                token = produce(s, message("stopped", f"m{i}", i, sender="u-pro", sender_type="provider", content=f"stopped {i}"))
                r = tags.check(http.get("/v1/threads/preview", headers=user | {"X-Readside-After": token}))
                assert preview(r) == f"stopped {i}" and r.headers["x-readside-consistency"] == "caught-up"
                for _ in range(6):  # plain reads: the other replica or the primary, never an error
                    tags.check(http.get("/v1/threads/preview", headers=user))
                    tags.check(http.get("/v1/threads/summary", headers=user))
            # Both replicas down: the primary answers everything.
            cluster.replicas[0].stop()
            try:
                token = produce(s, message("stopped", "m9", 9, sender="u-pro", sender_type="provider", content="all down"))
                r = tags.check(http.get("/v1/threads/preview", headers=user | {"X-Readside-After": token}))
                assert preview(r) == "all down"
                assert preview(tags.check(http.get("/v1/threads/preview", headers=user))) == "all down"
            finally:
                cluster.replicas[0].start()
        finally:
            stopped.start()
        replicated.caught_up()
        # Back: the replicas answer again.
        before = replica_reads(http)

        def from_a_replica() -> bool:
            assert preview(tags.check(http.get("/v1/threads/preview", headers=user))) == "all down"
            return replica_reads(http) > before

        wait_until(from_a_replica, 30, "the restarted replicas to answer")


def test_with_redis_a_paused_replica_never_puts_an_old_body_under_a_new_version(
    bootstrap: str, cluster: Cluster, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The cache's versions are bumped after the primary's commit: a body stored under one must hold
    that commit, so the cache's renders are the primary's, whatever the replicas hold."""
    with _replicated_stack(bootstrap, cluster, tmp_path_factory.mktemp("api"), redis_url=redis_url) as cached:
        s, tags = cached.settings, Tags()
        user = auth(cached, "u-cached")
        send(s, [started("cached", client="u-cached", provider="u-pro", at=0)])
        cached.caught_up()
        with cached.client() as http:
            assert preview(tags.check(http.get("/v1/threads/preview", headers=user))) is None
            with paused(*cluster.replicas):
                for i in range(1, 4):
                    token = produce(s, message("cached", f"m{i}", i, sender="u-pro", sender_type="provider", content=f"cached {i}"))
                    r = tags.check(http.get("/v1/threads/preview", headers=user | {"X-Readside-After": token}))
                    assert preview(r) == f"cached {i}"
                    # Once the projector has bumped the version, a plain read is the new body (a HIT
                    # or a render), never the paused replicas' rows under the new version.
                    wait_until(lambda i=i: preview(tags.check(http.get("/v1/threads/preview", headers=user))) == f"cached {i}",
                               20, "a plain read to show the new message (an old body stored under the new version would stay)")
                    again = tags.check(http.get("/v1/threads/preview", headers=user | {"If-None-Match": r.headers["etag"]}))
                    assert again.status_code == 304 or preview(again) == f"cached {i}"
            cached.caught_up()
