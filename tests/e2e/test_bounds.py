"""Bounded by design: what an anonymous client can make the API hold — Redis keys, request
heads, idle or silent connections, waiting requests — has a limit, and the API keeps answering
others while one client pushes against it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from multiprocessing.pool import ThreadPool
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from readside.api.auth import make_token
from readside.api.ryw import POLL
from readside.embedded import EmbeddedValkey, free_port
from readside.shared.settings import Settings
from tests.conftest import _with_db
from tests.e2e.conftest import Stack, running_stack
from tests.support import api_server, send, wait_caught_up, wait_until
from tests.unit.test_providers_fold import profile

SECRET = "bounds-secret-0123456789-abcdefghijklmnop"


# -- an API process of our own, for the HTTP limits ------------------------------------------

@contextlib.contextmanager
def api_process(db_url: str, logs: Path, **env: str) -> Iterator[tuple[str, int]]:
    """``readside api`` on a free port with ``env`` on top of a minimal configuration."""
    settings = replace(Settings(), database_url=db_url, jwt_secret=SECRET, cursor_secret="cursor-" + SECRET)
    with api_server({**settings.to_env(), **env}, logs, timeout=30) as (base, _):
        host, port = base.removeprefix("http://").rsplit(":", 1)
        yield host, int(port)


@pytest.fixture(scope="module")
def bare_db(pg_admin_url: str) -> Iterator[str]:
    """A database with nothing in it: enough for /healthz and /readyz."""
    name = f"rs_bounds_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _with_db(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def limited(bare_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    with api_process(bare_db, tmp_path_factory.mktemp("api"), READSIDE_HTTP_HEADER_TIMEOUT="2") as address:
        yield address


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:80]
    return int(response[9:12])


def read_response(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """One whole response with a Content-Length body (or what came before the server closed)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True if the server closes ``sock`` (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


GET = b"GET /healthz HTTP/1.1\r\nHost: readside\r\n\r\n"


def test_a_one_megabyte_header_is_a_quick_431_and_others_are_served_meanwhile(limited: tuple[str, int]) -> None:
    host, port = limited
    big = socket.create_connection((host, port))
    head = b"GET /healthz HTTP/1.1\r\nHost: readside\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\n"

    def send() -> None:
        with contextlib.suppress(OSError):  # the server may close before it has all of it
            big.sendall(head)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=10) as http:
        assert http.get("/healthz").status_code == 200  # another client, while the big head comes
    response = read_response(big)
    assert status_of(response) == 431
    assert b"application/problem+json" in response and b"32768 bytes" in response
    sender.join(10)
    big.close()
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=10) as http:
        assert http.get("/healthz").status_code == 200


def test_a_silent_or_trickling_connection_is_closed_after_the_header_timeout(limited: tuple[str, int]) -> None:
    host, port = limited
    silent = socket.create_connection((host, port))
    trickling = socket.create_connection((host, port))
    # A byte a little more often than the timeout: each one would restart a per-read timer.
    deadline = time.monotonic() + 30
    trickling.sendall(b"G")
    closed = False
    for byte in b"ET /healthz HTTP/1.1\r\nX-Slow: " + b"s" * 200:
        if time.monotonic() > deadline:
            break
        if closed_by_server(trickling, 0.5):
            closed = True
            break
        with contextlib.suppress(OSError):
            trickling.send(bytes([byte]))
    assert closed, "a trickling head was never cut off"
    assert closed_by_server(silent, 30), "a silent connection was never closed"
    silent.close()
    trickling.close()


def test_a_keep_alive_connection_idle_longer_than_uvicorns_default_is_still_served(limited: tuple[str, int]) -> None:
    host, port = limited
    with socket.create_connection((host, port)) as sock:
        sock.sendall(GET)
        assert status_of(read_response(sock)) == 200
        # uvicorn's default keep-alive (5 s) would close it here; READSIDE_HTTP_KEEPALIVE is 75 s
        assert not closed_by_server(sock, 6.5)
        sock.sendall(GET)
        assert status_of(read_response(sock)) == 200


def test_past_the_concurrency_limit_requests_get_a_quick_503(bare_db: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    with api_process(bare_db, tmp_path_factory.mktemp("api"), READSIDE_HTTP_MAX_CONCURRENCY="3") as (host, port):
        held = []
        for _ in range(3):
            sock = socket.create_connection((host, port))
            sock.sendall(GET)
            held.append((sock, status_of(read_response(sock))))
        with socket.create_connection((host, port)) as extra:
            extra.sendall(GET)
            assert status_of(read_response(extra)) == 503
        for sock, _ in held:
            sock.close()
        assert [status for _, status in held][:2] == [200, 200]


def test_metrics_can_move_to_a_port_of_their_own(bare_db: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    metrics_port = free_port()
    with api_process(bare_db, tmp_path_factory.mktemp("api"), READSIDE_METRICS_PORT=str(metrics_port)) as (host, port):
        with httpx.Client(base_url=f"http://{host}:{port}", timeout=10) as http:
            assert http.get("/healthz").status_code == 200
            public = http.get("/metrics")
            assert public.status_code == 404 and public.headers["content-type"] == "application/problem+json"
        private = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert private.status_code == 200
        assert 'readside_http_requests_total{route="/healthz",status="200"}' in private.text


def test_405_says_which_methods_are_allowed(limited: tuple[str, int]) -> None:
    host, port = limited
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=10) as http:
        for method in ("POST", "DELETE", "PUT"):
            r = http.request(method, "/v1/providers")
            assert r.status_code == 405
            assert r.headers["content-type"] == "application/problem+json"
            assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "HEAD"}


# -- Redis holds only what the projector wrote -------------------------------------------------

@pytest.fixture(scope="module")
def cached(bootstrap: str, pg_admin_url: str, valkey: EmbeddedValkey, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(bootstrap, pg_admin_url, tmp_path_factory.mktemp("api"), redis_url=valkey.url,
                       cache_timeout=2.0) as s:
        yield s


def test_parameters_past_their_length_cap_are_a_400(cached: Stack) -> None:
    token = make_token(cached.settings.jwt_secret, "u-caps")
    with cached.client() as http:
        assert http.get("/v1/providers", params={"category": "c" * 200}).status_code == 200
        for params in ({"category": "c" * 201}, {"category": "x" * 60_000}, {"cursor": "c" * 5000},
                       {"fields": "id," * 400}, {"sort": "s" * 201}):
            r = http.get("/v1/providers", params=params)
            assert r.status_code == 400, params
            assert r.headers["content-type"] == "application/problem+json"
            assert "longer than" in r.json()["detail"]
        r = http.get("/v1/threads/preview", params={"cursor": "c" * 5000}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 400
        r = http.get("/v1/threads/" + "t" * 201 + "/messages", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 404


def test_requests_naming_scopes_nothing_wrote_add_no_redis_keys(cached: Stack, valkey: EmbeddedValkey) -> None:
    r = redis.Redis.from_url(valkey.url)
    token = make_token(cached.settings.jwt_secret, f"u-nobody-{uuid.uuid4().hex[:8]}")
    try:
        versions_before = set(r.scan_iter(match="rs:{*}:v", count=1000))
        keys_before = r.dbsize()
        with cached.client() as http:
            for i in range(60):
                category = f"{uuid.uuid4().hex}-{i}-" + "z" * 150
                got = http.get("/v1/providers", params={"category": category, "limit": str(1 + i % 50)})
                assert got.status_code == 200 and got.json()["items"] == []
            for _ in range(10):
                auth = {"Authorization": f"Bearer {make_token(cached.settings.jwt_secret, f'u-new-{uuid.uuid4().hex}')}"}
                assert http.get("/v1/threads/preview", headers=auth).status_code == 200
                got = http.get(f"/v1/threads/t-{uuid.uuid4().hex}/messages", headers={"Authorization": f"Bearer {token}"})
                assert got.status_code == 404
        assert set(r.scan_iter(match="rs:{*}:v", count=1000)) - versions_before == set()
        assert r.dbsize() <= keys_before
    finally:
        r.close()


def test_a_written_scope_is_cached_and_its_version_comes_back_after_it_expires(cached: Stack, valkey: EmbeddedValkey) -> None:
    s = cached.settings
    u = uuid.uuid4().hex[:8]
    send(s, [profile(f"p-{u}", 1, category=f"Cat {u}")])
    wait_caught_up(s.database_url, s.kafka_bootstrap, "providers", [s.topic_prefix + "providers.events"])
    key = f"rs:{{providers:cat_{u}}}:v"
    r = redis.Redis.from_url(valkey.url)
    try:
        wait_until(lambda: r.exists(key), 30, "the projector's version bump")
        with cached.client() as http:
            def get() -> httpx.Response:
                got = http.get("/v1/providers", params={"category": f"cat {u}"})
                assert got.status_code == 200 and [i["id"] for i in got.json()["items"]] == [f"p-{u}"]
                return got

            wait_until(lambda: get().headers["x-cache"] == "HIT", 30, "a cached body")
            r.delete(key)  # as if it had expired (an hour unbumped) or been evicted
            from_pg = get()
            assert from_pg.headers["etag"].startswith('W/"p')  # PostgreSQL answered
            wait_until(lambda: r.exists(key), 30, "the version seeded from PostgreSQL's")
            assert wait_until(lambda: get().headers["x-cache"] == "HIT", 30, "a cached body again")
            assert get().headers["etag"].startswith('W/"r')
    finally:
        r.close()


# -- read-your-writes waits are cheap and capped -----------------------------------------------

def _gauge(base_url: str, name: str) -> float:
    text = httpx.get(base_url + "/metrics", timeout=10).text
    found = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(found[0]) if found else -1.0


def _transactions(db_url: str) -> int:
    """Transactions of every session of the database so far: the others are ended first (a
    session's statistics reach pg_stat_database when it ends, or some seconds later)."""
    name = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        ended = [pid for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchall()]
        conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int4[]) AS pid", (ended,))
        # Wait for those sessions only: an API's pool opens new ones at once, and theirs are yet
        # to count (a few statements at most).
        wait_until(lambda: conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)",
                                        (ended,)).fetchone()[0] == 0, 30, "the sessions to end")
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (name,)).fetchone()[0]


def test_many_waiting_requests_share_one_poll_and_past_the_cap_are_answered_at_once(
    db_url: str, bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from readside.projector.service import select
    from readside.shared.db import migrate

    migrate(db_url, select(None))
    prefix = f"b{uuid.uuid4().hex[:8]}."
    topic = prefix + "providers.events"
    with psycopg.connect(db_url, autocommit=True) as conn:
        # The providers projection has committed offsets 0..4 of partition 0; the broker's head is 100.
        conn.execute("INSERT INTO checkpoints (projection, topic, partition, next_offset) VALUES ('providers', %s, 0, 5)", (topic,))
        conn.execute("INSERT INTO partition_heads (topic, partition, high_watermark) VALUES (%s, 0, 100)", (topic,))
    waiting = 20
    env = {"READSIDE_TOPIC_PREFIX": prefix, "READSIDE_KAFKA_BOOTSTRAP": bootstrap, "READSIDE_RYW_MAX_WAITERS": str(waiting)}
    before = _transactions(db_url)
    with api_process(db_url, tmp_path_factory.mktemp("api"), **env) as (host, port):
        base = f"http://{host}:{port}"

        def get(position: str) -> httpx.Response:
            return httpx.get(base + "/v1/providers", headers={"X-Readside-After": position}, timeout=30)

        with ThreadPool(waiting) as pool:
            answers = pool.map(get, [f"{topic}:0:50"] * waiting)  # never committed: each waits ~2 s
        assert [(a.status_code, a.headers["x-readside-consistency"]) for a in answers] == [(200, "timeout")] * waiting
        spent = _transactions(db_url) - before
        # The waits share one poll (a statement every 20 ms for about 2 s); each request then
        # renders (a few autocommit statements). A poll per waiting request: 20 x ~2 s / 20 ms.
        assert spent <= 10 * waiting + 3 / POLL + 50, spent  # measured: ~255; one poll per request: ~3200

        # The cap: with every waiting place taken, a request is not made to wait.
        wait_until(lambda: get(f"{topic}:0:2").status_code == 200, 30, "the API's database sessions again")
        parked = [socket.create_connection((host, port)) for _ in range(waiting)]
        for sock in parked:  # sent within moments of each other, unlike threads starting clients
            sock.sendall(f"GET /v1/providers HTTP/1.1\r\nHost: x\r\nX-Readside-After: {topic}:0:50\r\n\r\n".encode())
        wait_until(lambda: _gauge(base, "readside_ryw_waiting") == waiting, 30, f"{waiting} waiting requests")
        busy = get(f"{topic}:0:2")  # committed, but answered at once without waiting
        for sock in parked:
            assert b"x-readside-consistency: timeout" in read_response(sock).lower()
            sock.close()
        assert busy.status_code == 200 and busy.headers["x-readside-consistency"] == "timeout"
        assert get(f"{topic}:0:2").headers["x-readside-consistency"] == "caught-up"


def test_a_waiting_request_is_released_when_the_projector_commits_its_position(cached: Stack) -> None:
    s = cached.settings
    u = uuid.uuid4().hex[:8]
    send(s, [profile(f"p-{u}", 1, category=f"Ryw {u}")])
    wait_caught_up(s.database_url, s.kafka_bootstrap, "providers", [s.topic_prefix + "providers.events"])
    renamed = profile(f"p-{u}", 2, category=f"Ryw {u}", business_name="Renamed")

    async def produce() -> str:
        import orjson
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
        await producer.start()
        try:
            meta = await producer.send_and_wait(s.topic_prefix + renamed.topic, orjson.dumps(renamed.value), key=renamed.key.encode())
            return f"{meta.topic}:{meta.partition}:{meta.offset}"
        finally:
            await producer.stop()

    with psycopg.connect(s.database_url) as lock, ThreadPool(1) as pool:
        # The projector cannot commit past this position while its checkpoint rows are locked.
        lock.execute("SELECT 1 FROM checkpoints WHERE projection = 'providers' FOR UPDATE")
        position = asyncio.run(produce())
        answer = pool.apply_async(lambda: httpx.get(
            cached.base_url + "/v1/providers", params={"category": f"ryw {u}"}, headers={"X-Readside-After": position}, timeout=30))
        wait_until(lambda: _gauge(cached.base_url, "readside_ryw_waiting") >= 1, 30, "the request to wait")
        lock.rollback()  # the projector's commit goes through now
        r = answer.get(30)
    assert r.status_code == 200 and r.headers["x-readside-consistency"] == "caught-up"
    assert [i["business_name"] for i in r.json()["items"]] == ["Renamed"]
