"""Events in through Kafka, assertions on HTTP responses."""

from __future__ import annotations

import time

import jwt
import pytest

from tests.support import auth, deleted, message, payment, read, send, started, wait_caught_up

THREAD_TOPICS = ("threads.events", "payments.events")

# Ann (u-ann) is the client of 25 threads with Bob (u-bob); a personalized video thread stays
# hidden until paid; Cat (u-cat) has one thread with Bob.
RECORDS = [
    *[started(f"t{i:02d}", client="u-ann", provider="u-bob", at=i) for i in range(25)],
    *[message(f"t{i:02d}", f"m{i:02d}", 100 + i, sender="u-bob", sender_type="provider", content=f"  hello   {i}\n") for i in range(25)],
    message("t03", "m03b", 200, sender="u-ann", content="x" * 150),
    message("t03", "m03c", 210, sender="u-bob", sender_type="provider", content="gone"),
    deleted("t03", "m03c", 220),
    read("t05", "u-ann", up_to=105, at=230),
    started("v1", client="u-ann", provider="u-bob", at=50, service_type="personalized_video"),
    started("c1", client="u-cat", provider="u-bob", at=60),
    message("c1", "mc1", 300, sender="u-cat", content="private to cat and bob"),
]


@pytest.fixture(scope="module")
def loaded(stack):
    s = stack.settings
    send(s, RECORDS)
    wait_caught_up(s.database_url, s.kafka_bootstrap, "threads", [s.topic_prefix + t for t in THREAD_TOPICS])
    return stack



def test_inbox_pages_in_order_without_repeats(loaded):
    with loaded.client() as http:
        seen, cursor, pages = [], None, 0
        while True:
            params = {"limit": 10} | ({"cursor": cursor} if cursor else {})
            r = http.get("/v1/threads/preview", params=params, headers=auth(loaded, "u-ann"))
            assert r.status_code == 200, r.text
            body = r.json()
            seen += [(i["last_ts"], i["thread_id"]) for i in body["items"]]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
    assert pages == 3 and len(seen) == 25 == len(set(seen))  # the unpaid video thread is hidden
    assert seen == sorted(seen, reverse=True)
    assert seen[0][1] == "t03"


def test_inbox_item_follows_the_contract(loaded):
    with loaded.client() as http:
        r = http.get("/v1/threads/preview", params={"limit": 100, "role": "client"}, headers=auth(loaded, "u-ann"))
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "private, no-cache"
    assert "db;dur=" in r.headers["server-timing"]
    items = {i["thread_id"]: i for i in r.json()["items"]}
    t03 = items["t03"]
    assert t03["last_message_preview"] == "x" * 100 and t03["last_actor"] == "client"
    assert t03["meta"] == {"service_type": "live_performance", "paid": False, "message_count": 2}
    assert t03["counterparty"] == {"name": "DJ Bob", "avatar_url": None}
    assert items["t07"]["last_message_preview"] == "hello 7" and items["t07"]["unread_count"] == 1
    assert items["t05"]["unread_count"] == 0
    assert "v1" not in items


def test_summary_counts_listed_threads(loaded):
    with loaded.client() as http:
        r = http.get("/v1/threads/summary", headers=auth(loaded, "u-ann"))
        bob = http.get("/v1/threads/summary", params={"role": "provider"}, headers=auth(loaded, "u-bob"))
    assert r.json() == {"unread_total": 24, "thread_count": 25}  # t05 is read
    assert bob.json()["thread_count"] == 26


def test_messages_newest_first_and_other_users_get_404(loaded):
    with loaded.client() as http:
        r = http.get("/v1/threads/t03/messages", params={"limit": 1}, headers=auth(loaded, "u-ann"))
        body = r.json()
        assert [m["message_id"] for m in body["messages"]] == ["m03b"]
        assert body["has_more"] is True and body["next_cursor"]
        r2 = http.get("/v1/threads/t03/messages", params={"limit": 1, "cursor": body["next_cursor"]}, headers=auth(loaded, "u-ann"))
        assert [m["message_id"] for m in r2.json()["messages"]] == ["m03"]
        assert r2.json()["has_more"] is False and r2.json()["next_cursor"] is None
        assert r2.json()["messages"][0]["content"] == "  hello   3\n"  # content is returned raw
        for path in ("/v1/threads/c1/messages", "/v1/threads/nope/messages"):
            denied = http.get(path, headers=auth(loaded, "u-ann"))
            assert denied.status_code == 404
            assert denied.headers["content-type"] == "application/problem+json"
            assert denied.json()["type"] == "/problems/not-found"


def test_etag_gives_304_until_an_event_changes_the_inbox(loaded):
    s = loaded.settings
    with loaded.client() as http:
        first = http.get("/v1/threads/preview", headers=auth(loaded, "u-cat"))
        etag = first.headers["etag"]
        assert etag.startswith('W/"')
        again = http.get("/v1/threads/preview", headers=auth(loaded, "u-cat") | {"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        send(s, [message("c1", "mc2", 400, sender="u-bob", sender_type="provider")])
        wait_caught_up(s.database_url, s.kafka_bootstrap, "threads", [s.topic_prefix + t for t in THREAD_TOPICS])
        changed = http.get("/v1/threads/preview", headers=auth(loaded, "u-cat") | {"If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag
        assert changed.json()["items"][0]["unread_count"] == 1


def test_payment_reveals_the_personalized_video_thread(loaded):
    s = loaded.settings
    send(s, [payment("v1", "pay-1", 500)])
    wait_caught_up(s.database_url, s.kafka_bootstrap, "threads", [s.topic_prefix + t for t in THREAD_TOPICS])
    with loaded.client() as http:
        r = http.get("/v1/threads/preview", params={"limit": 100}, headers=auth(loaded, "u-ann"))
    items = {i["thread_id"]: i for i in r.json()["items"]}
    assert items["v1"]["meta"]["paid"] is True


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"Authorization": "Bearer not-a-jwt"}, id="garbled"),
        pytest.param({"Authorization": "Basic dTpw"}, id="wrong-scheme"),
        pytest.param({"Authorization": "Bearer " + jwt.encode({"sub": "u-ann", "exp": int(time.time()) - 60}, "e2e-secret-0123456789-abcdefghijklmnop", algorithm="HS256")}, id="expired"),
        pytest.param({"Authorization": "Bearer " + jwt.encode({"sub": "u-ann", "exp": int(time.time()) + 60}, "wrong-secret-0123456789-abcdefghijklmnop", algorithm="HS256")}, id="wrong-signature"),
        pytest.param({"Authorization": "Bearer " + jwt.encode({"sub": "u-ann"}, "e2e-secret-0123456789-abcdefghijklmnop", algorithm="HS256")}, id="no-exp"),
        pytest.param({"Authorization": "Bearer " + jwt.encode({"sub": "u-ann", "exp": int(time.time()) + 60}, None, algorithm="none")}, id="alg-none"),
    ],
)
def test_unauthenticated_requests_get_401(stack, headers):
    with stack.client() as http:
        r = http.get("/v1/threads/preview", headers=headers, params={"limit": 500})  # 401 before 400
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "/problems/unauthorized" and r.json()["status"] == 401
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"limit": "0"}, id="limit-low"),
        pytest.param({"limit": "101"}, id="limit-high"),
        pytest.param({"limit": "ten"}, id="limit-text"),
        pytest.param({"role": "admin"}, id="bad-role"),
        pytest.param({"viewer": "u-bob"}, id="unknown-param"),
        pytest.param({"cursor": "garbage!!"}, id="garbled-cursor"),
        pytest.param({"limit": "--5"}, id="limit-double-sign"),
        pytest.param({"limit": "9" * 5000}, id="limit-5000-digits"),
        pytest.param({"limit": "1\x00"}, id="limit-nul"),
        pytest.param({"role": "client\x00"}, id="role-nul"),
    ],
)
def test_bad_parameters_get_400(loaded, params):
    with loaded.client() as http:
        r = http.get("/v1/threads/preview", params=params, headers=auth(loaded, "u-ann"))
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "/problems/invalid-parameter"


@pytest.mark.parametrize(
    "after",
    [
        pytest.param("{topic}:0:9223372036854775808", id="offset-above-int8"),
        pytest.param("{topic}:0:-1", id="negative-offset"),
        pytest.param("{topic}:2147483648:0", id="partition-above-int4"),
        pytest.param("nope:0:1", id="not-this-projections-topic"),
        pytest.param(",".join(["{topic}:0:1"] * 17), id="too-many-positions"),
    ],
)
def test_bad_read_your_writes_positions_get_400_at_once(loaded, after):
    topic = loaded.settings.topic_prefix + "threads.events"
    with loaded.client() as http:
        r = http.get("/v1/threads/preview", headers=auth(loaded, "u-ann") | {"X-Readside-After": after.format(topic=topic)})
        public = http.get("/v1/providers", headers={"X-Readside-After": after.format(topic=topic)})
    assert r.status_code == 400 and r.json()["type"] == "/problems/invalid-parameter", r.text
    assert public.status_code == 400, public.text  # a threads topic is not what the listings read


def test_a_thread_id_with_a_nul_is_a_404_like_any_unknown_thread(loaded):
    with loaded.client() as http:
        r = http.get("/v1/threads/t%00x/messages", headers=auth(loaded, "u-ann"))
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", r.text


def test_forged_or_reused_cursors_get_400(loaded):
    with loaded.client() as http:
        r = http.get("/v1/threads/preview", params={"limit": 5}, headers=auth(loaded, "u-ann"))
        cursor = r.json()["next_cursor"]
        forged = cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")
        for params, sub in (
            ({"limit": 5, "cursor": forged}, "u-ann"),
            ({"limit": 6, "cursor": cursor}, "u-ann"),  # other parameters
            ({"limit": 5, "cursor": cursor}, "u-bob"),  # other viewer
        ):
            bad = http.get("/v1/threads/preview", params=params, headers=auth(loaded, sub))
            assert bad.status_code == 400, (params, sub)
        ok = http.get("/v1/threads/preview", params={"limit": 5, "cursor": cursor}, headers=auth(loaded, "u-ann"))
        assert ok.status_code == 200


def test_operations_endpoints(loaded):
    with loaded.client() as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").json() == {"status": "ready"}
        assert "readside_http_requests" in http.get("/metrics").text
        assert http.get("/v1/admin/projections", headers=auth(loaded, "u-ann")).status_code == 403
        r = http.get("/v1/admin/projections", headers=auth(loaded, "ops", ["admin"]))
    (threads,) = [p for p in r.json()["projections"] if p["name"] == "threads"]
    assert threads["state"] == "live" and threads["version"] == 1
    assert {p["topic"] for p in threads["partitions"]} == {loaded.settings.topic_prefix + t for t in THREAD_TOPICS}
    assert all(p["lag"] == 0 for p in threads["partitions"])
