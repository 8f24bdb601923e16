"""``GET /v1/events`` with a real stack: a viewer hears of changes to what it can read — its inbox,
its threads — and of nothing else; without Redis the endpoint answers 503."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest

from readside.embedded import EmbeddedValkey
from readside.shared.cache import Cache
from tests.e2e.conftest import Stack, running_stack
from tests.support import auth, message, send, started, wait_until


@pytest.fixture(scope="module")
def live(bootstrap: str, pg_admin_url: str, valkey: EmbeddedValkey, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(bootstrap, pg_admin_url, tmp_path_factory.mktemp("api"), redis_url=valkey.url) as s:
        yield s



class EventReader:
    """A server-sent-events client on one streaming GET: ``next()`` gives ``(event, data)``, or
    None when the server ends the stream."""

    def __init__(self, stack: Stack, headers: dict[str, str]) -> None:
        self.client = httpx.Client(base_url=stack.base_url, timeout=httpx.Timeout(10.0, read=30.0))
        self._stream = self.client.stream("GET", "/v1/events", headers=headers)
        self.response = self._stream.__enter__()
        self._lines = self.response.iter_lines()

    def next(self) -> tuple[str, str] | None:
        event, data = "", []
        for line in self._lines:
            if not line:
                if event or data:
                    return event or "message", "\n".join(data)
            elif not line.startswith(":"):  # ":" opens a comment (the heartbeat)
                name, _, value = line.partition(":")
                if name == "event":
                    event = value.strip()
                elif name == "data":
                    data.append(value.removeprefix(" "))
        return None

    def scopes_until(self, done: Callable[[set[str]], bool], timeout: float = 60.0) -> set[str]:
        """Every ``changed`` scope received, up to the one that makes ``done`` true."""
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        while not done(seen):
            assert time.monotonic() < deadline, f"timed out; received {sorted(seen)}"
            got = self.next()
            assert got is not None, f"the stream ended; received {sorted(seen)}"
            if got[0] == "changed":
                seen.add(orjson.loads(got[1])["scope"])
        return seen

    def close(self) -> None:
        self._stream.__exit__(None, None, None)
        self.client.close()


@pytest.fixture
def connect(live: Stack) -> Iterator[Callable[..., EventReader]]:
    readers: list[EventReader] = []

    def open_for(sub: str, roles: list[str] | None = None) -> EventReader:
        reader = EventReader(live, auth(live, sub, roles))
        readers.append(reader)
        return reader

    yield open_for
    for reader in readers:
        reader.close()


def test_a_viewer_hears_of_its_inbox_and_threads_and_never_of_another_viewers(
    live: Stack, connect: Callable[..., EventReader]
) -> None:
    u = uuid.uuid4().hex[:8]
    ann, bob, ann_pro, bob_pro = f"u-ann-{u}", f"u-bob-{u}", f"u-ann-pro-{u}", f"u-bob-pro-{u}"
    ann_thread, bob_thread = f"t-ann-{u}", f"t-bob-{u}"
    ann_events, bob_events = connect(ann), connect(bob)
    for reader in (ann_events, bob_events):
        assert reader.response.status_code == 200
        assert reader.response.headers["content-type"].startswith("text/event-stream")
        assert reader.response.headers["cache-control"] == "no-store"
        assert reader.next() == ("ready", "{}")  # subscribed: nothing published from now on is missed

    # Bob's inbox changes first; Bob hears of it.
    send(live.settings, [started(bob_thread, client=bob, provider=bob_pro, at=0),
                         message(bob_thread, "m1", 5, sender=bob_pro, sender_type="provider", content="for Bob")])
    bob_heard = bob_events.scopes_until(lambda s: {f"viewer:{bob}", f"thread:{bob_thread}"} <= s)
    assert bob_heard == {f"viewer:{bob}", f"thread:{bob_thread}"}

    # Then Ann's. Bob's scopes were published before Ann's event even existed: had they leaked
    # to Ann, they would be in her stream ahead of her own.
    send(live.settings, [started(ann_thread, client=ann, provider=ann_pro, at=0),
                         message(ann_thread, "m1", 5, sender=ann_pro, sender_type="provider", content="for Ann")])
    ann_heard = ann_events.scopes_until(lambda s: {f"viewer:{ann}", f"thread:{ann_thread}"} <= s)
    assert ann_heard == {f"viewer:{ann}", f"thread:{ann_thread}"}

    # What the stream promised is there: Ann refetches and sees the new message.
    with live.client() as http:
        items = http.get("/v1/threads/preview", headers=auth(live, ann)).json()["items"]
    assert [(i["thread_id"], i["last_message_preview"]) for i in items] == [(ann_thread, "for Ann")]


def bump(valkey: EmbeddedValkey, *scopes: str) -> None:
    """New versions for ``scopes``, announced as the projector does it (``Cache.bump``)."""

    async def go() -> None:
        cache = Cache(valkey.url)
        try:
            await cache.bump(scopes)
        finally:
            await cache.close()

    asyncio.run(go())


def test_shared_scopes_reach_whoever_may_read_them(
    live: Stack, valkey: EmbeddedValkey, connect: Callable[..., EventReader]
) -> None:
    u = uuid.uuid4().hex[:8]
    tech, user = f"u-tech-{u}", f"u-user-{u}"
    tech_events, user_events = connect(tech, ["technician"]), connect(user)
    for reader in (tech_events, user_events):
        assert reader.next() == ("ready", "{}")
    bump(valkey, "providers", "providers:dj", "requests:*", "requests:3", "templates", f"workflows:{tech}",
         f"workflows:{user}", f"viewer:u-else-{u}", f"workflows:u-else-{u}", f"thread:t-nobody-{u}")
    bump(valkey, f"viewer:{tech}", f"viewer:{user}")  # after the first: everything it routed is in
    assert tech_events.scopes_until(lambda s: f"viewer:{tech}" in s) == {
        "requests:*", "requests:3", "templates", f"workflows:{tech}", f"viewer:{tech}"}
    assert user_events.scopes_until(lambda s: f"viewer:{user}" in s) == {
        "templates", f"workflows:{user}", f"viewer:{user}"}


def test_an_id_with_a_newline_cannot_inject_scopes_into_another_viewers_stream(
    live: Stack, valkey: EmbeddedValkey, connect: Callable[..., EventReader]
) -> None:
    u = uuid.uuid4().hex[:8]
    victim = f"u-victim-{u}"
    victim_events = connect(victim)
    assert victim_events.next() == ("ready", "{}")
    # A thread id holding a newline, bumped as the projector bumps any changed scope. Published
    # joined by newlines, it would read as the scopes "thread:t-x" and "viewer:<victim>".
    bump(valkey, f"thread:t-x-{u}\nviewer:{victim}", f"workflows:u-else-{u}\ntemplates")
    bump(valkey, f"workflows:{victim}")  # after the first: everything it routed is in
    assert victim_events.scopes_until(lambda s: f"workflows:{victim}" in s) == {f"workflows:{victim}"}


def test_the_stream_needs_a_token_and_takes_no_parameters(live: Stack) -> None:
    with live.client() as http:
        missing = http.get("/v1/events")
        assert missing.status_code == 401
        assert missing.headers["content-type"] == "application/problem+json"
        unknown = http.get("/v1/events", params={"viewer": "u-1"}, headers=auth(live, "u-x"))
        assert unknown.status_code == 400


def test_redis_down_ends_open_streams_and_new_ones_get_503_until_it_is_back(
    live: Stack, valkey: EmbeddedValkey, connect: Callable[..., EventReader]
) -> None:
    viewer = f"u-outage-{uuid.uuid4().hex[:8]}"
    before = connect(viewer)
    assert before.next() == ("ready", "{}")
    valkey.kill()
    try:
        assert before.next() is None  # the feed is gone: the stream ends, the client reconnects
        with live.client() as http:  # its 10 s timeout: a hanging answer fails the test
            down = http.get("/v1/events", headers=auth(live, viewer))
        assert down.status_code == 503 and down.json()["type"] == "/problems/unavailable"
    finally:
        valkey.restart()

    def reconnected() -> EventReader | None:  # as a client does, every few seconds (``retry:``)
        reader = connect(viewer)
        return reader if reader.response.status_code == 200 else None

    after = wait_until(reconnected, 30, "a stream to open again")
    assert after.next() == ("ready", "{}")


@pytest.fixture(scope="module")
def no_redis(bootstrap: str, pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(bootstrap, pg_admin_url, tmp_path_factory.mktemp("api-no-redis")) as s:
        yield s


def test_without_redis_the_stream_is_a_quick_503(no_redis: Stack) -> None:
    with no_redis.client() as http:  # its 10 s timeout: a hanging answer fails the test
        r = http.get("/v1/events", headers=auth(no_redis, "u-1"))
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "/problems/unavailable"
