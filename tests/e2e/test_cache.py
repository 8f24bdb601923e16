"""The Redis cache with a real Valkey: never stale after a commit, 304s, single-flight, outages,
freshness and read-your-writes."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import psycopg
import pytest
import redis

from readside.embedded import EmbeddedValkey
from tests.e2e.conftest import Stack, running_stack
from tests.support import auth, message, send, started, wait_caught_up, wait_until

TOPICS = ("threads.events", "payments.events")


@pytest.fixture(scope="module")
def cached(bootstrap: str, pg_admin_url: str, valkey: EmbeddedValkey, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # These tests are about what the cache serves, not about its timeout: a generous one, so a
    # loaded CI machine's slow event loop does not send requests to the PostgreSQL fallback
    # (a killed Redis refuses at once, whatever the timeout).
    with running_stack(bootstrap, pg_admin_url, tmp_path_factory.mktemp("api"), redis_url=valkey.url,
                       cache_timeout=2.0) as s:
        yield s



def caught_up(stack: Stack) -> None:
    s = stack.settings
    wait_caught_up(s.database_url, s.kafka_bootstrap, "threads", [s.topic_prefix + t for t in TOPICS])


def renders(http: httpx.Client) -> float:
    text = http.get("/metrics").text
    found = re.search(r'^readside_renders_total\{projection="threads"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_cached_inbox_is_never_served_after_the_commit_that_changes_it(cached: Stack, valkey: EmbeddedValkey) -> None:
    send(cached.settings, [started("fresh", client="u-fresh", provider="u-pro", at=0)])
    caught_up(cached)
    version_key = "rs:{viewer:u-fresh}:v"
    r = redis.Redis.from_url(valkey.url)
    stop = threading.Event()

    def reader() -> None:  # concurrent readers keep the cache warm and racing
        with cached.client() as http:
            while not stop.is_set():
                http.get("/v1/threads/preview", headers=auth(cached, "u-fresh"))

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        with cached.client() as http:
            for i in range(1, 16):
                before = r.get(version_key)
                send(cached.settings, [message("fresh", f"m{i}", 10 + i, sender="u-pro", sender_type="provider", content=f"n{i}")])
                # the projector's commit is complete once its version bump is visible
                wait_until(lambda: r.get(version_key) != before, 30, "the version bump")  # noqa: B023 - called here
                body = http.get("/v1/threads/preview", headers=auth(cached, "u-fresh")).json()
                assert body["items"][0]["last_message_preview"] == f"n{i}"
                assert body["items"][0]["unread_count"] == i
    finally:
        stop.set()
        for t in threads:
            t.join()
        r.close()


def test_304_from_the_cache_and_a_new_etag_after_an_event(cached: Stack) -> None:
    send(cached.settings, [started("e1", client="u-etag", provider="u-pro", at=0)])
    caught_up(cached)
    with cached.client() as http:
        first = http.get("/v1/threads/preview", headers=auth(cached, "u-etag"))
        assert first.headers["x-cache"] in ("HIT", "MISS")
        second = http.get("/v1/threads/preview", headers=auth(cached, "u-etag"))
        assert second.headers["x-cache"] == "HIT" and second.content == first.content
        assert "cache;dur=" in second.headers["server-timing"]
        tag = first.headers["etag"]
        not_modified = http.get("/v1/threads/preview", headers=auth(cached, "u-etag") | {"If-None-Match": tag})
        assert not_modified.status_code == 304 and not_modified.content == b""
        assert not_modified.headers["etag"] == tag and not_modified.headers["x-cache"] == "HIT"
        other = http.get("/v1/threads/preview", headers=auth(cached, "u-pro") | {"If-None-Match": tag})
        assert other.status_code == 200  # another viewer's ETag never matches
        send(cached.settings, [message("e1", "m1", 5, sender="u-pro", sender_type="provider")])
        caught_up(cached)
        wait_until(
            lambda: http.get("/v1/threads/preview", headers=auth(cached, "u-etag") | {"If-None-Match": tag}).status_code == 200,
            10, "the ETag to change",
        )


def test_a_burst_of_identical_misses_renders_once(cached: Stack) -> None:
    send(cached.settings, [started("b1", client="u-burst", provider="u-pro", at=0)])
    caught_up(cached)
    with cached.client() as http:
        before = renders(http)

        def get(_: int) -> httpx.Response:
            with httpx.Client(base_url=cached.base_url, timeout=10) as c:
                return c.get("/v1/threads/preview", params={"limit": 7}, headers=auth(cached, "u-burst"))

        with ThreadPoolExecutor(32) as pool:
            responses = list(pool.map(get, range(64)))
        assert {r.status_code for r in responses} == {200}
        assert len({r.content for r in responses}) == 1
        assert renders(http) - before == 1


def test_redis_down_answers_from_postgres_and_the_cache_recovers(cached: Stack, valkey: EmbeddedValkey) -> None:
    send(cached.settings, [started("k1", client="u-kill", provider="u-pro", at=0)])
    caught_up(cached)
    with cached.client() as http:
        assert http.get("/v1/threads/preview", headers=auth(cached, "u-kill")).status_code == 200
        valkey.kill()
        try:
            for _i in range(5):
                t0 = time.perf_counter()
                r = http.get("/v1/threads/preview", headers=auth(cached, "u-kill"))
                assert r.status_code == 200 and r.headers["x-cache"] == "MISS"
                assert time.perf_counter() - t0 < 1.0
            send(cached.settings, [message("k1", "m1", 5, sender="u-pro", sender_type="provider", content="while down")])
            caught_up(cached)
            r = http.get("/v1/threads/preview", headers=auth(cached, "u-kill"))
            assert r.json()["items"][0]["last_message_preview"] == "while down"
        finally:
            valkey.restart()
        wait_until(
            lambda: http.get("/v1/threads/preview", headers=auth(cached, "u-kill")).headers["x-cache"] == "HIT",
            20, "the cache to recover",
        )
        assert http.get("/v1/threads/preview", headers=auth(cached, "u-kill")).json()["items"][0]["last_message_preview"] == "while down"


def test_read_your_writes_waits_for_the_position_and_times_out_cleanly(cached: Stack) -> None:
    s = cached.settings
    send(cached.settings, [started("ryw", client="u-ryw", provider="u-pro", at=0)])
    caught_up(cached)
    topic = s.topic_prefix + "threads.events"
    record = message("ryw", "m1", 5, sender="u-pro", sender_type="provider", content="just sent")

    async def produce() -> str:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
        await producer.start()
        try:
            meta = await producer.send_and_wait(topic, orjson.dumps(record.value), key=record.key.encode())
            return f"{meta.topic}:{meta.partition}:{meta.offset}"
        finally:
            await producer.stop()

    with cached.client() as http:
        before = http.get("/v1/threads/preview", headers=auth(cached, "u-ryw"))
        assert before.status_code == 200 and before.json()["items"][0]["last_message_preview"] is None
    token = asyncio.run(produce())
    with cached.client() as http:
        # The ETag from before the write: read-your-writes answers from PostgreSQL, never a 304 of it.
        r = http.get("/v1/threads/preview", headers=auth(cached, "u-ryw") | {
            "X-Readside-After": token, "If-None-Match": before.headers["etag"]})
        assert r.status_code == 200 and r.headers["x-readside-consistency"] == "caught-up"
        assert r.json()["items"][0]["last_message_preview"] == "just sent"
        assert r.headers["x-cache"] == "MISS"
        # A made-up position past the partition's head is clamped to the head: nothing to wait for.
        made_up = http.get("/v1/threads/preview", headers=auth(cached, "u-ryw") | {"X-Readside-After": f"{topic}:0:999999999"})
        assert made_up.status_code == 200 and made_up.headers["x-readside-consistency"] == "caught-up"
    # A real position the projector cannot commit (its checkpoint rows are locked): a timeout.
    with psycopg.connect(s.database_url) as lock:
        lock.execute("SELECT 1 FROM checkpoints WHERE projection = 'threads' FOR UPDATE")
        later = asyncio.run(produce())
        with cached.client() as http:
            t0 = time.perf_counter()
            late = http.get("/v1/threads/preview", headers=auth(cached, "u-ryw") | {"X-Readside-After": later})
            elapsed = time.perf_counter() - t0
        lock.rollback()
    assert late.status_code == 200 and late.headers["x-readside-consistency"] == "timeout"
    assert 1.5 < elapsed < 5
    with cached.client() as http:
        bad = http.get("/v1/threads/preview", headers=auth(cached, "u-ryw") | {"X-Readside-After": "nonsense"})
        assert bad.status_code == 400
        assert re.fullmatch(r"events=\d+; seconds=\d+\.\d", r.headers["x-readside-lag"])
