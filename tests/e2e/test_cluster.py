"""The cache on a real three-node Valkey Cluster (``redis+cluster://``): HITs and 304s, a bump after
a commit, the change stream, and a cutover's generation honoured at once."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.cluster

from readside.api.auth import make_token
from readside.projector.rebuild import Options, Rebuilder
from readside.readmodels.registry import REGISTRY
from readside.shared.cache import Cache, version_key
from readside.shared.cluster import PENDING, PENDING_WAIT, cluster_nodes
from tests.e2e.conftest import Stack, running_stack
from tests.e2e.test_events import EventReader
from tests.e2e.test_rebuild_api import MARK_SQL, WATCHED, Reader, generation, marked_items
from tests.integration.test_rebuild import with_extra_sql
from tests.support import auth, message, send, started, wait_caught_up, wait_until
from tests.valkey_cluster import running_cluster

TOPICS = ("threads.events", "payments.events")


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_cluster(tmp_path_factory.mktemp("valkey-cluster")) as cluster:
        yield cluster.url


@pytest.fixture(scope="module")
def clustered(bootstrap: str, pg_admin_url: str, cluster_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(bootstrap, pg_admin_url, tmp_path_factory.mktemp("api"), redis_url=cluster_url,
                       cache_timeout=2.0) as s:
        yield s


@pytest.fixture
def cluster(cluster_url: str) -> Iterator[redis.cluster.RedisCluster]:
    host, port = (cluster_nodes(cluster_url) or [])[0]
    client = redis.cluster.RedisCluster(host=host, port=port)
    yield client
    client.close()


def caught_up(stack: Stack) -> None:
    s = stack.settings
    wait_caught_up(s.database_url, s.kafka_bootstrap, "threads", [s.topic_prefix + t for t in TOPICS])


def test_the_cluster_has_three_primaries_and_a_scope_keeps_its_keys_in_one_slot(cluster: redis.cluster.RedisCluster) -> None:
    assert len(cluster.get_primaries()) == 3
    slot = cluster.keyslot(version_key("viewer:u-1"))
    assert cluster.keyslot("rs:{viewer:u-1}:b:0123:1:2") == slot != cluster.keyslot(version_key("viewer:u-2"))


def test_a_hit_and_a_304_from_the_cluster(clustered: Stack) -> None:
    send(clustered.settings, [started("c1", client="u-c1", provider="u-pro", at=0)])
    caught_up(clustered)
    with clustered.client() as http:
        get = lambda **h: http.get("/v1/threads/preview", headers=auth(clustered, "u-c1") | h)  # noqa: E731
        first = get()
        assert first.status_code == 200
        wait_until(lambda: get().headers["x-cache"] == "HIT", 10, "a HIT")
        hit = get()
        assert hit.headers["x-cache"] == "HIT" and hit.content == first.content
        tag = hit.headers["etag"]
        assert tag.startswith('W/"r')  # versions from the cache, not from PostgreSQL
        not_modified = get(**{"If-None-Match": tag})
        assert not_modified.status_code == 304 and not_modified.headers["x-cache"] == "HIT"
        assert not_modified.headers["etag"] == tag


def test_a_commit_bumps_the_version_and_the_next_answer_is_the_new_body(clustered: Stack, cluster: redis.cluster.RedisCluster) -> None:
    send(clustered.settings, [started("c2", client="u-c2", provider="u-pro", at=0)])
    caught_up(clustered)
    key = version_key("viewer:u-c2")
    with clustered.client() as http:
        for i in range(1, 6):
            http.get("/v1/threads/preview", headers=auth(clustered, "u-c2"))  # cached under the current version
            tag = http.get("/v1/threads/preview", headers=auth(clustered, "u-c2")).headers["etag"]
            before = cluster.get(key)
            send(clustered.settings, [message("c2", f"m{i}", 10 + i, sender="u-pro", sender_type="provider", content=f"n{i}")])
            wait_until(lambda: cluster.get(key) != before, 30, "the version bump")  # noqa: B023 - called here
            r = http.get("/v1/threads/preview", headers=auth(clustered, "u-c2"))
            item = r.json()["items"][0]
            assert item["last_message_preview"] == f"n{i}" and item["unread_count"] == i
            assert http.get("/v1/threads/preview", headers=auth(clustered, "u-c2") | {"If-None-Match": tag}).status_code == 200


def test_the_change_stream_hears_a_bump_published_on_the_cluster(clustered: Stack) -> None:
    reader = EventReader(clustered, auth(clustered, "u-c3"))
    try:
        assert reader.response.status_code == 200
        assert reader.next() == ("ready", "{}")  # subscribed: nothing published from now on is missed
        send(clustered.settings, [started("c3", client="u-c3", provider="u-pro", at=0),
                                  message("c3", "m1", 20, sender="u-pro", sender_type="provider")])
        seen = reader.scopes_until(lambda s: {"viewer:u-c3", "thread:c3"} <= s)
        assert seen == {"viewer:u-c3", "thread:c3"}
    finally:
        reader.close()


def test_after_a_cutover_no_body_of_the_previous_generation_is_served(clustered: Stack, tmp_path: Path) -> None:
    s = clustered.settings
    watched = [started(f"cw-{i}", client="u-watch", provider=f"u-cw{i}", at=i) for i in range(WATCHED)]
    watched += [message(f"cw-{i}", f"cwm-{i}", 100 + i, sender=f"u-cw{i}", sender_type="provider") for i in range(WATCHED)]
    send(s, watched)
    caught_up(clustered)
    token = make_token(s.jwt_secret, "u-watch", [], ttl=600)
    with clustered.client() as http:
        get = lambda: http.get("/v1/threads/preview", headers={"Authorization": f"Bearer {token}"})  # noqa: E731
        wait_until(lambda: get().headers["x-cache"] == "HIT", 10, "a HIT before the rebuild")
        before = generation(get().headers["etag"])
    reader = Reader(clustered.base_url, token)
    reader.start()
    try:
        out = io.StringIO()
        asyncio.run(Rebuilder(s, with_extra_sql(REGISTRY["threads"], MARK_SQL), Options(stream=out)).rebuild())
        rebuilt_at = time.monotonic()
        assert "cut over" in out.getvalue() and "cutover announced" in out.getvalue(), out.getvalue()
        with clustered.client() as http:
            after = get()
            assert generation(after.headers["etag"]) == before + 1 and marked_items(after.content) == (WATCHED, WATCHED)
            wait_until(lambda: get().headers["x-cache"] == "HIT", 10, "a HIT after the rebuild")
        time.sleep(0.5)
    finally:
        reader.halt.set()
        reader.join(30)
    assert not reader.errors, reader.errors[:3]
    assert {status for _, status, _, _ in reader.log} <= {200, 304}
    bodies = [(at, generation(tag), marked_items(body)) for at, status, tag, body in reader.log if status == 200]
    for began, gen, (marks, items) in bodies:
        assert items == WATCHED and marks in (0, WATCHED), f"a response mixed versions: {marks} of {items} marked"
        if gen > before:
            assert marks == WATCHED, "a body of the previous tables served under the new generation"
        if began > rebuilt_at:
            assert gen == before + 1 and marks == WATCHED, "the previous generation served after the cutover"
    assert any(began > rebuilt_at for began, _, _ in bodies)


def test_while_a_cutover_is_announced_the_api_answers_from_postgres_and_a_failed_one_clears_it(
    clustered: Stack, cluster_url: str
) -> None:
    send(clustered.settings, [started("c5", client="u-c5", provider="u-pro", at=0)])
    caught_up(clustered)

    async def announce(value: bytes | None) -> None:
        cache = Cache(cluster_url, timeout=1.0)
        try:
            await cache.publish_generation("threads", value)
        finally:
            await cache.close()

    with clustered.client() as http:
        get = lambda: http.get("/v1/threads/preview", headers=auth(clustered, "u-c5"))  # noqa: E731
        wait_until(lambda: get().headers["x-cache"] == "HIT", 10, "a HIT")
        cached = get()
        asyncio.run(announce(PENDING))  # as `readside rebuild` does before its swap
        time.sleep(PENDING_WAIT)
        pending = get()
        assert pending.headers["x-cache"] == "MISS" and pending.headers["etag"].startswith('W/"p')
        assert pending.content == cached.content  # the same rows, from PostgreSQL
        asyncio.run(announce(None))  # the cutover failed: nothing was swapped
        wait_until(lambda: get().headers["x-cache"] == "HIT", 10, "the cache again")
        assert get().headers["etag"] == cached.headers["etag"]
