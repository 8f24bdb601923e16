"""Metrics and logs as an operator reads them: ``readside api --workers 2`` scraped as one API
(whichever worker answers), the cache, pool, SSE and projector metrics moving with what users
do, and the access log (one line per request, never a token)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from readside.api.auth import make_token
from readside.embedded import EmbeddedValkey, free_port
from readside.projector.service import select
from readside.shared.db import migrate
from readside.shared.settings import Settings
from tests.conftest import _with_db
from tests.e2e.conftest import Stack, running_stack
from tests.support import api_server, send, wait_caught_up, wait_until
from tests.unit.test_providers_fold import profile

SECRET = "metrics-secret-0123456789-abcdefghijklmnop"


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """``/metrics`` as ``{(sample name, labels): value}``, on a new connection each time (so
    successive scrapes reach whichever worker the kernel picks)."""
    response = httpx.get(url, timeout=10, headers={"Connection": "close"})
    assert response.status_code == 200, response.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@contextlib.contextmanager
def api_process(db_url: str, logs: Path, *args: str, redis_url: str | None = None, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``readside api *args`` on a free port; yields its base URL and the process."""
    settings = replace(Settings(), database_url=db_url, redis_url=redis_url, jwt_secret=SECRET, cursor_secret="cursor-" + SECRET)
    with api_server({**settings.to_env(), **env}, logs, *args) as running:
        yield running


def workers_of(api: subprocess.Popen) -> list[int]:
    """The pids of uvicorn's worker processes under ``api``."""
    children = Path(f"/proc/{api.pid}/task/{api.pid}/children").read_text().split()
    found = []
    for pid in map(int, children):
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


@pytest.fixture(scope="module")
def migrated_db(pg_admin_url: str) -> Iterator[str]:
    """A database with the read tables and nothing in them."""
    name = f"rs_metrics_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_db(pg_admin_url, name)
    migrate(url, select(None))
    yield url
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- readside api --workers 2: one coherent scrape ---------------------------------------------

def test_every_scrape_of_two_workers_counts_every_request(migrated_db: str, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with api_process(migrated_db, tmp_path, "--workers", "2", TMPDIR=str(tmp)) as (base, api):
        # both workers serve: each has reported its pool (every worker's pool, summed)
        wait_until(lambda: value(scrape(base + "/metrics"), "readside_db_pool_max") == 2 * Settings().api_pool_size,
                   60, "both workers to serve")
        probed = value(scrape(base + "/metrics"), "readside_http_requests_total", route="/healthz", status="200") or 0
        healthz, providers, missing = 40, 15, 10
        for _ in range(healthz):  # a new connection each: the kernel spreads them over the workers
            assert httpx.get(base + "/healthz", headers={"Connection": "close"}).status_code == 200
        for _ in range(providers):
            assert httpx.get(base + "/v1/providers", headers={"Connection": "close"}).status_code == 200
        for _ in range(missing):
            assert httpx.get(base + "/no-such-route", headers={"Connection": "close"}).status_code == 404
        for _ in range(8):  # whichever worker answers, the same totals
            samples = scrape(base + "/metrics")
            assert value(samples, "readside_http_requests_total", route="/healthz", status="200") == probed + healthz
            assert value(samples, "readside_http_requests_total", route="/v1/providers", status="200") == providers
            assert value(samples, "readside_http_requests_total", route="unmatched", status="404") == missing
            assert value(samples, "readside_http_request_seconds_count", route="/healthz") == probed + healthz
            assert value(samples, "readside_renders_total", projection="providers") == providers
            assert value(samples, "readside_db_pool_max") == 2 * Settings().api_pool_size
        assert list(tmp.glob("readside-metrics-*")), "the workers' metrics directory"
    assert not list(tmp.glob("readside-metrics-*")), "the metrics directory is removed at exit"


def test_a_killed_worker_no_longer_counts_in_the_gauges_but_its_requests_still_do(
    migrated_db: str, valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    token = make_token(SECRET, "u-sse")
    with api_process(migrated_db, tmp_path, "--workers", "2", redis_url=valkey.url) as (base, api):
        wait_until(lambda: len(workers_of(api)) == 2, 30, "two workers")
        for _ in range(20):
            assert httpx.get(base + "/healthz", headers={"Connection": "close"}).status_code == 200
        opened = threading.Event()

        def listen() -> None:
            with contextlib.suppress(httpx.HTTPError), httpx.stream(
                "GET", base + "/v1/events", headers={"Authorization": f"Bearer {token}"}, timeout=60
            ) as stream:
                assert stream.status_code == 200
                for line in stream.iter_lines():
                    if line == "event: ready":
                        opened.set()

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        assert opened.wait(30), "the stream to open"
        for _ in range(4):
            assert value(scrape(base + "/metrics"), "readside_sse_clients") == 1
        before = set(workers_of(api))
        for pid in before:
            os.kill(pid, signal.SIGKILL)  # no chance to say it is gone
        wait_until(lambda: len(set(workers_of(api)) - before) == 2, 60, "uvicorn to start two new workers")

        def settled() -> dict | None:
            try:
                samples = scrape(base + "/metrics")
            except httpx.HTTPError:
                return None
            return samples if value(samples, "readside_sse_clients") == 0 else None

        samples = wait_until(settled, 30, "the killed workers' stream to stop counting")
        assert value(samples, "readside_http_requests_total", route="/healthz", status="200") >= 20
        listener.join(30)


# -- what users do moves the metrics (one worker) ----------------------------------------------

@pytest.fixture(scope="module")
def cached(bootstrap: str, pg_admin_url: str, valkey: EmbeddedValkey, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(bootstrap, pg_admin_url, tmp_path_factory.mktemp("api"), redis_url=valkey.url,
                       cache_timeout=2.0, projector_port=free_port()) as s:
        yield s


def test_cache_hits_and_misses_are_counted_per_projection_as_x_cache_says(cached: Stack) -> None:
    s = cached.settings
    u = uuid.uuid4().hex[:8]
    send(s, [profile(f"p-{u}", 1, category=f"Cat {u}")])
    wait_caught_up(s.database_url, s.kafka_bootstrap, "providers", [s.topic_prefix + "providers.events"])
    before = scrape(cached.base_url + "/metrics")
    said = {"HIT": 0, "MISS": 0}
    with cached.client() as http:
        def hit() -> bool:
            answer = http.get("/v1/providers", params={"category": f"cat {u}"})
            assert answer.status_code == 200
            said[answer.headers["x-cache"]] += 1
            return answer.headers["x-cache"] == "HIT"

        wait_until(hit, 30, "a cached body")
        for _ in range(3):
            hit()
    after = scrape(cached.base_url + "/metrics")

    def moved(name: str) -> float:
        return (value(after, name, projection="providers") or 0) - (value(before, name, projection="providers") or 0)

    assert said["HIT"] >= 4
    assert moved("readside_cache_hits_total") == said["HIT"]
    assert moved("readside_cache_misses_total") == said["MISS"]


def test_an_open_event_stream_shows_as_one_sse_client(cached: Stack) -> None:
    token = make_token(cached.settings.jwt_secret, f"u-{uuid.uuid4().hex[:8]}")
    assert value(scrape(cached.base_url + "/metrics"), "readside_sse_clients") == 0
    with httpx.stream("GET", cached.base_url + "/v1/events", headers={"Authorization": f"Bearer {token}"}, timeout=30) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()  # kept: a dropped iterator closes the connection
        assert next(lines) == "retry: 3000"
        assert value(scrape(cached.base_url + "/metrics"), "readside_sse_clients") == 1
    wait_until(lambda: value(scrape(cached.base_url + "/metrics"), "readside_sse_clients") == 0, 30,
               "the closed stream to stop counting")


def test_projected_batches_show_in_the_projector_histograms(cached: Stack) -> None:
    s = cached.settings
    u = uuid.uuid4().hex[:8]
    projector = f"http://127.0.0.1:{s.projector_port}/metrics"
    records = [profile(f"p-{u}-{i}", 1, category=f"Cat {u}") for i in range(7)]
    send(s, records)
    wait_caught_up(s.database_url, s.kafka_bootstrap, "providers", [s.topic_prefix + "providers.events"])

    def observed() -> dict | None:
        m = scrape(projector)
        count = value(m, "readside_projector_batch_events_count", projection="providers")
        return m if count and count == value(m, "readside_projector_batches_total", projection="providers") else None

    samples = wait_until(observed, 30, "the batches in the histogram")
    batches = value(samples, "readside_projector_batches_total", projection="providers")
    events = value(samples, "readside_projector_events_total", projection="providers")
    assert events is not None and events >= len(records)
    assert value(samples, "readside_projector_batch_events_count", projection="providers") == batches
    assert value(samples, "readside_projector_batch_events_sum", projection="providers") == events
    assert value(samples, "readside_projector_batch_seconds_count", projection="providers") == batches
    assert value(samples, "readside_projector_batch_seconds_sum", projection="providers") > 0
    assert value(samples, "readside_projector_batch_seconds_bucket", projection="providers", le="+Inf") == batches


# -- pool waits ----------------------------------------------------------------------------------

def test_a_request_waiting_for_the_only_pool_connection_shows_in_the_pool_metrics(migrated_db: str, tmp_path: Path) -> None:
    with api_process(migrated_db, tmp_path, READSIDE_API_POOL_SIZE="1") as (base, api):
        quiet = scrape(base + "/metrics")
        assert value(quiet, "readside_db_pool_max") == 1
        assert value(quiet, "readside_db_pool_waiting") == 0
        answers: list[int] = []
        with psycopg.connect(migrated_db) as blocker:
            # Something holds a table the API reads (a migration, a forgotten session): the
            # first request holds the pool's one connection, waiting on the lock...
            blocker.execute("LOCK TABLE checkpoints IN ACCESS EXCLUSIVE MODE")
            first = threading.Thread(target=lambda: answers.append(httpx.get(base + "/v1/providers", timeout=30).status_code))
            first.start()
            dbname = psycopg.conninfo.conninfo_to_dict(migrated_db)["dbname"]
            wait_until(lambda: blocker.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'", (dbname,)
            ).fetchone()[0] == 1, 30, "the first request to wait on the lock")
            # ... and the next one waits for the pool: the operator sees it waiting.
            second = threading.Thread(target=lambda: answers.append(
                httpx.get(base + "/v1/providers", params={"limit": "5"}, timeout=30).status_code))
            second.start()
            wait_until(lambda: value(scrape(base + "/metrics"), "readside_db_pool_waiting") == 1, 30,
                       "a request waiting for a connection")
            second.join(30)  # the pool's timeout ends its wait: a 503
            blocker.rollback()
        first.join(30)
        assert sorted(answers) == [200, 503]
        samples = scrape(base + "/metrics")
        assert value(samples, "readside_db_pool_waiting") == 0
        assert value(samples, "readside_db_pool_waits_total") >= 1
        assert value(samples, "readside_db_pool_errors_total") >= 1
        assert value(samples, "readside_db_pool_wait_seconds_total") > 1  # the 2 s pool timeout
        assert value(samples, "readside_db_pool_requests_total") >= 2


# -- the access log ------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["json-env-two-workers", "text-flag"])
def test_the_access_log_has_one_line_per_request_and_never_a_token(migrated_db: str, tmp_path: Path, how: str) -> None:
    token = make_token(SECRET, "u-log")
    if how == "json-env-two-workers":
        args, env = ("--workers", "2"), {"READSIDE_ACCESS_LOG": "1", "READSIDE_LOG_FORMAT": "json"}
    else:
        args, env = ("--access-log",), {"READSIDE_LOG_FORMAT": "text"}
    marker = uuid.uuid4().hex
    query = f"?token={token}&m={marker}"  # a token where it does not belong is not logged either
    sent = [
        ("/v1/providers", "", 200), ("/v1/threads/preview", query, 400), ("/v1/templates", "", 200),
        ("/no-such-route", query, 404), ("/readyz", query, 200),
    ]
    with api_process(migrated_db, tmp_path, *args, **env) as (base, api):
        for path, params, status in sent:
            answer = httpx.get(f"{base}{path}{params}", headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == status, (path, answer.text)
        log = next(tmp_path.glob("api-*.log"))

        def lines(path: str) -> list[str]:
            return [line for line in log.read_text().splitlines() if f" {path} " in line or f'"{path}"' in line]

        wait_until(lambda: all(lines(path) for path, _, _ in sent), 30, "a line per request")
    text = log.read_text()
    assert token not in text and token.split(".")[2] not in text and marker not in text
    for path, _, status in sent:
        got = lines(path)
        assert len(got) == 1, got
        line = got[0]
        if how == "json-env-two-workers":
            entry = json.loads(line)
            assert entry["logger"] == "readside.access" and entry["level"] == "INFO"
            assert (entry["method"], entry["path"], entry["status"]) == ("GET", path, status)
            assert entry["duration_ms"] >= 0
            assert entry["cache"] is None  # no Redis: no X-Cache
        else:
            assert f"readside.access: GET {path} {status} " in line and line.rstrip().endswith("ms")
