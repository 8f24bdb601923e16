"""Avatars end to end: ``data:`` avatars in through Kafka, the URL a list ships, the image that
URL answers (CONTRACT §2; docs/api.md "GET /v1/img/avatar/{id}")."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest

from readside.api.auth import make_token
from readside.readmodels.avatars.fold import MAX_BYTES
from tests.support import send, started, wait_caught_up
from tests.unit.test_providers_fold import profile

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489")
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"><rect width="1" height="1"/></svg>'
DATA_PNG = "data:image/png;base64," + base64.b64encode(PNG).decode()
DATA_SVG = "data:image/svg+xml," + quote(SVG)
DATA_GIF = "data:image/gif;base64," + base64.b64encode(GIF).decode()
HUGE = "data:image/png;base64," + base64.b64encode(b"\x89" * (MAX_BYTES + 1)).decode()

RECORDS = [
    started("t1", client="u-ann", provider="u-bob", at=1, client_avatar=DATA_PNG, provider_avatar=DATA_SVG),
    started("t2", client="u-cat", provider="u-dan", at=2, client_avatar="data:,not an image", provider_avatar=HUGE),
    # Eve's later thread (https) arrives first: her earlier data: avatar never comes back
    started("t4", client="u-eve", provider="u-bob", at=4, client_avatar="https://cdn.example/eve.jpg", provider_avatar=DATA_SVG),
    started("t3", client="u-eve", provider="u-bob", at=3, client_avatar=DATA_PNG, provider_avatar=DATA_SVG),
    # Fay's later thread has a data: avatar
    started("t5", client="u-fay", provider="u-bob", at=5, client_avatar="https://cdn.example/fay.jpg", provider_avatar=DATA_SVG),
    started("t6", client="u-fay", provider="u-bob", at=6, client_avatar=DATA_GIF, provider_avatar=DATA_SVG),
    started("t7", client="u/gus", provider="u-bob", at=7, client_avatar=DATA_PNG, provider_avatar=DATA_SVG),
    started("t8", client="same-id", provider="u-bob", at=8, client_avatar=DATA_PNG, provider_avatar=DATA_SVG),
    # provider listings: p-dj's latest snapshot is a GIF; p-gone's later one (sent first) is https
    profile("p-dj", 1, avatar_url=DATA_PNG),
    profile("p-dj", 2, avatar_url=DATA_GIF),
    profile("p-gone", 2, avatar_url="https://cdn.example/gone.jpg"),
    profile("p-gone", 1, avatar_url=DATA_PNG),
    profile("same-id", 1, avatar_url=DATA_SVG),  # a provider id equal to a user id
]


@pytest.fixture(scope="module")
def loaded(stack):
    s = stack.settings
    send(s, RECORDS)
    wait_caught_up(s.database_url, s.kafka_bootstrap, "threads", [s.topic_prefix + "threads.events"])
    wait_caught_up(s.database_url, s.kafka_bootstrap, "providers", [s.topic_prefix + "providers.events"])
    return stack


def _counterparty_avatars(stack, viewer: str) -> dict[str, str | None]:
    token = make_token(stack.settings.jwt_secret, viewer)
    with stack.client() as http:
        r = http.get("/v1/threads/preview", params={"limit": 100}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return {i["thread_id"]: i["counterparty"]["avatar_url"] for i in r.json()["items"]}


def _assert_problem_404(r) -> None:
    assert r.status_code == 404, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 404 and r.json()["type"] == "/problems/not-found"


def test_a_preview_ships_the_route_and_the_route_answers_the_exact_bytes(loaded):
    assert _counterparty_avatars(loaded, "u-ann") == {"t1": "/v1/img/avatar/u-bob"}
    assert _counterparty_avatars(loaded, "u-bob")["t1"] == "/v1/img/avatar/u-ann"
    with loaded.client() as http:  # no token: an <img> sends none
        png = http.get("/v1/img/avatar/u-ann")
        svg = http.get("/v1/img/avatar/u-bob")
    assert png.status_code == 200 and png.content == PNG and png.headers["content-type"] == "image/png"
    assert svg.status_code == 200 and svg.content == SVG.encode() and svg.headers["content-type"] == "image/svg+xml"
    for r in (png, svg):
        assert r.headers["cache-control"] == "public, max-age=30"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in r.headers["content-security-policy"]
        assert r.headers["etag"].startswith('W/"') and "db;dur=" in r.headers["server-timing"]
    assert png.headers["etag"] != svg.headers["etag"]


def test_if_none_match_answers_304_without_a_body(loaded):
    with loaded.client() as http:
        tag = http.get("/v1/img/avatar/u-ann").headers["etag"]
        same = http.get("/v1/img/avatar/u-ann", headers={"If-None-Match": tag})
        strong_form = http.get("/v1/img/avatar/u-ann", headers={"If-None-Match": f'"x", {tag.removeprefix("W/")}'})
        other = http.get("/v1/img/avatar/u-ann", headers={"If-None-Match": 'W/"0123"'})
        elsewhere = http.get("/v1/img/avatar/u-bob", headers={"If-None-Match": tag})
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == tag
    assert same.headers["cache-control"] == "public, max-age=30"
    assert strong_form.status_code == 304  # If-None-Match compares weakly
    assert other.status_code == 200 and other.content == PNG
    assert elsewhere.status_code == 200 and elsewhere.content == SVG.encode()


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/v1/img/avatar/u-nobody", id="unknown"),
        pytest.param("/v1/img/avatar/u-cat", id="data-url-not-an-image"),
        pytest.param("/v1/img/avatar/u-dan", id="oversized"),
        pytest.param("/v1/img/avatar/u-eve", id="latest-thread-has-an-https-avatar"),
        pytest.param("/v1/img/avatar/p-gone", id="latest-snapshot-has-an-https-avatar"),
        pytest.param("/v1/img/avatar/" + "x" * 201, id="id-too-long"),
        pytest.param("/v1/img/avatar/u-ann%01", id="control-character"),
        pytest.param("/v1/img/avatar/", id="empty"),
    ],
)
def test_nothing_to_serve_is_a_problem_404(loaded, path: str):
    with loaded.client() as http:
        _assert_problem_404(http.get(path))


def test_unusable_avatars_are_applied_and_still_ship_the_route(loaded):
    # not poison: t2 is in both inboxes; the contract's rule is on the URL's scheme
    assert _counterparty_avatars(loaded, "u-cat") == {"t2": "/v1/img/avatar/u-dan"}
    assert _counterparty_avatars(loaded, "u-dan") == {"t2": "/v1/img/avatar/u-cat"}
    # each preview keeps its own thread's avatar; the route serves the latest thread's
    eve = _counterparty_avatars(loaded, "u-bob")
    assert eve["t4"] == "https://cdn.example/eve.jpg" and eve["t3"] == "/v1/img/avatar/u-eve"
    assert eve["t6"] == "/v1/img/avatar/u-fay"
    with loaded.client() as http:
        fay = http.get(eve["t6"])
    assert fay.status_code == 200 and fay.content == GIF and fay.headers["content-type"] == "image/gif"


def test_an_id_with_a_slash_is_one_encoded_segment(loaded):
    url = _counterparty_avatars(loaded, "u-bob")["t7"]
    assert url == "/v1/img/avatar/u%2Fgus"
    with loaded.client() as http:
        r = http.get(url)
    assert r.status_code == 200 and r.content == PNG


def test_a_provider_listing_avatar_is_served_from_its_latest_snapshot(loaded):
    with loaded.client() as http:
        r = http.get("/v1/providers", params={"category": "DJ", "fields": "avatar_url", "limit": 50})
        cards = {i["id"]: i["avatar_url"] for i in r.json()["items"]}
        assert cards["p-dj"] == "/v1/img/avatar/p-dj"
        assert cards["p-gone"] == "https://cdn.example/gone.jpg"
        dj = http.get(cards["p-dj"])
        assert dj.status_code == 200 and dj.content == GIF and dj.headers["content-type"] == "image/gif"
        # a user and a provider with one id: the route serves the user's (docs/decisions.md)
        assert cards["same-id"] == "/v1/img/avatar/same-id"
        same = http.get("/v1/img/avatar/same-id")
        assert same.status_code == 200 and same.content == PNG


def test_parameters_are_refused_as_everywhere(loaded):
    with loaded.client() as http:
        r = http.get("/v1/img/avatar/u-ann", params={"v": "2"})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"


@pytest.fixture(scope="module")
def cached(bootstrap: str, pg_admin_url: str, valkey, tmp_path_factory: pytest.TempPathFactory):
    from tests.e2e.conftest import running_stack

    with running_stack(bootstrap, pg_admin_url, tmp_path_factory.mktemp("api"), redis_url=valkey.url, cache_timeout=2.0) as s:
        yield s


def test_with_a_cache_the_route_adds_no_redis_key_per_request(cached, valkey):
    import uuid

    import redis

    s = cached.settings
    send(s, RECORDS[:1])
    wait_caught_up(s.database_url, s.kafka_bootstrap, "threads", [s.topic_prefix + "threads.events"])
    r = redis.Redis.from_url(valkey.url)
    try:
        before = {k.decode() for k in r.scan_iter(count=1000)}
        asked = [f"u-nobody-{uuid.uuid4().hex}" for _ in range(30)]
        with cached.client() as http:
            ann = http.get("/v1/img/avatar/u-ann")
            assert ann.status_code == 200 and ann.content == PNG and "x-cache" not in ann.headers
            assert http.get("/v1/img/avatar/u-ann", headers={"If-None-Match": ann.headers["etag"]}).status_code == 304
            for owner in asked:
                _assert_problem_404(http.get(f"/v1/img/avatar/{owner}"))
        new = {k.decode() for k in r.scan_iter(count=1000)} - before
        # the projector's own bumps may still land (viewer scopes of t1); nothing names an avatar
        assert not [k for k in new if "avatar" in k or "nobody" in k]
    finally:
        r.close()
