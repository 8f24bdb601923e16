"""A Redis Cluster shard that dies and comes back: the API answers from PostgreSQL meanwhile (no
5xx, nothing stale), the projector goes on, and once the shard is back the cache serves the new
bodies — never one from before the outage."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from readside.shared.cache import version_key
from tests.e2e.conftest import Stack, running_stack
from tests.support import auth, message, send, started, wait_caught_up, wait_until
from tests.valkey_cluster import ValkeyCluster, running_cluster

TOPICS = ("threads.events", "payments.events")


@pytest.fixture(scope="module")
def valkeys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    with running_cluster(tmp_path_factory.mktemp("valkey-cluster-outage")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def stack(bootstrap: str, pg_admin_url: str, valkeys: ValkeyCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(bootstrap, pg_admin_url, tmp_path_factory.mktemp("api"), redis_url=valkeys.url, cache_timeout=0.5) as s:
        yield s


def _caught_up(stack: Stack) -> None:
    s = stack.settings
    wait_caught_up(s.database_url, s.kafka_bootstrap, "threads", [s.topic_prefix + t for t in TOPICS])


def _users_on(valkeys: ValkeyCluster, port: int, count: int) -> list[str]:
    users, n = [], 0
    while len(users) < count:
        n += 1
        if valkeys.port_of(version_key(f"viewer:u-out-{n}")) == port:
            users.append(f"u-out-{n}")
    return users


def _inbox(http: httpx.Client, stack: Stack, user: str) -> httpx.Response:
    r = http.get("/v1/threads/preview", headers=auth(stack, user))
    assert r.status_code == 200, (user, r.status_code, r.text)
    return r


def test_a_dead_shard_sends_reads_to_postgres_and_its_return_serves_no_old_body(stack: Stack, valkeys: ValkeyCluster) -> None:
    down_port, up_port = valkeys.ports[0], valkeys.ports[1]
    (down,), (up,) = _users_on(valkeys, down_port, 1), _users_on(valkeys, up_port, 1)
    send(stack.settings, [started(f"t-{u}", client=u, provider="u-pro-out", at=0) for u in (down, up)]
         + [message(f"t-{u}", "m0", 1, sender="u-pro-out", sender_type="provider", content="before") for u in (down, up)])
    _caught_up(stack)
    with stack.client() as http:
        for u in (down, up):  # rendered, then served from the cache
            _inbox(http, stack, u)
            wait_until(lambda u=u: _inbox(http, stack, u).headers.get("x-cache") == "HIT", 10, f"a HIT for {u}")
        valkeys.kill(0)
        try:
            # the projector goes on while the shard is dead; every answer is the committed one
            send(stack.settings, [message(f"t-{u}", "m1", 2, sender="u-pro-out", sender_type="provider", content="during")
                                  for u in (down, up)])
            _caught_up(stack)
            for u in (down, up):
                for _ in range(5):
                    r = _inbox(http, stack, u)
                    assert r.json()["items"][0]["last_message_preview"] == "during"
                    assert u != down or r.headers.get("x-cache") != "HIT", "a HIT from a dead shard"
        finally:
            valkeys.restart(0)
        # back, empty: the scopes' versions start again from the time (SET NX), above every old one;
        # the bumps the projector kept while the shard was dead go out; the old bodies never match
        for u in (down, up):
            wait_until(lambda u=u: _inbox(http, stack, u).headers.get("x-cache") == "HIT", 30, f"a HIT for {u} again")
            assert _inbox(http, stack, u).json()["items"][0]["last_message_preview"] == "during"
        send(stack.settings, [message(f"t-{u}", "m2", 3, sender="u-pro-out", sender_type="provider", content="after")
                              for u in (down, up)])
        _caught_up(stack)
        for u in (down, up):
            wait_until(lambda u=u: _inbox(http, stack, u).json()["items"][0]["last_message_preview"] == "after", 10,
                       f"the new body for {u}")
