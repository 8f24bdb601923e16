"""A rebuild and a rollback while events keep arriving and a client keeps reading, over real HTTP.

The rebuilt version is made observably different (test only): its fold also appends " (v2)" to
the counterparty names in the inbox of one viewer, ``u-watch``, whose threads get no new events
during the test. So every inbox body of ``u-watch`` is either all-v1 (no mark) or all-v2 (every
item marked), and a mix would be a response built from both versions' tables. The ETag names the
generation (``W/"r<generation>.<version>.…"``): a body served under the new generation must be
the new version's.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from readside.api.auth import make_token
from readside.load import publish, thread_stream
from readside.projector.rebuild import Options, Rebuilder
from readside.readmodels.registry import REGISTRY
from tests.e2e.conftest import running_stack
from tests.integration.test_rebuild import versions, with_extra_sql
from tests.support import assert_tables_equal_fold, message, send, started, wait_caught_up

pytestmark = pytest.mark.slow

MARK = " (v2)"
MARK_SQL = (
    "UPDATE thread_previews SET item = convert_to(jsonb_set(convert_from(item, 'UTF8')::jsonb, "
    "'{counterparty,name}', to_jsonb((convert_from(item, 'UTF8')::jsonb #>> '{counterparty,name}') || ' (v2)'))::text, "
    "'UTF8') WHERE user_id = 'u-watch' AND convert_from(item, 'UTF8')::jsonb #>> '{counterparty,name}' NOT LIKE '% (v2)'"
)
WATCHED = 12


def generation(etag: str) -> int:
    return int(etag.removeprefix('W/"').split(".")[0][1:])


class Reader(threading.Thread):
    """GETs the inbox of ``u-watch`` in a loop, half of the time revalidating with its last ETag."""

    def __init__(self, base_url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.base_url, self.token = base_url, token
        self.log: list[tuple[float, int, str, bytes]] = []
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        etag = None
        with httpx.Client(base_url=self.base_url, timeout=10) as http:
            n = 0
            while not self.halt.is_set():
                n += 1
                headers = {"Authorization": f"Bearer {self.token}"}
                if etag and n % 2:
                    headers["If-None-Match"] = etag
                began = time.monotonic()
                try:
                    r = http.get("/v1/threads/preview", headers=headers)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                self.log.append((began, r.status_code, r.headers.get("etag", ""), r.content))
                etag = r.headers.get("etag") or etag


def marked_items(body: bytes) -> tuple[int, int]:
    items = orjson.loads(body)["items"]
    return sum(i["counterparty"]["name"].endswith(MARK) for i in items), len(items)


def test_rebuild_and_rollback_under_load_serve_one_version_per_response(
    bootstrap: str, pg_admin_url: str, redis_url: str, tmp_path: Path
) -> None:
    with running_stack(bootstrap, pg_admin_url, tmp_path, redis_url=redis_url) as stack:
        s = stack.settings
        watched = [started(f"w-{i}", client="u-watch", provider=f"u-pw{i}", at=i) for i in range(WATCHED)]
        watched += [message(f"w-{i}", f"wm-{i}", 100 + i, sender=f"u-pw{i}", sender_type="provider") for i in range(WATCHED)]
        first, more = thread_stream(threads=120, seed=41), thread_stream(threads=120, seed=42)
        everything = watched + first + more
        topics = [s.topic_prefix + t for t in ("threads.events", "payments.events")]
        send(s, watched + first)
        wait_caught_up(s.database_url, s.kafka_bootstrap, "threads", topics)
        token = make_token(s.jwt_secret, "u-watch", [], ttl=600)
        with stack.client() as http:
            v1 = http.get("/v1/threads/preview", headers={"Authorization": f"Bearer {token}"})
        assert v1.status_code == 200 and marked_items(v1.content) == (0, WATCHED)

        publisher = threading.Thread(
            target=lambda: asyncio.run(publish(more, bootstrap=s.kafka_bootstrap, prefix=s.topic_prefix, rate=400))
        )
        reader = Reader(stack.base_url, token)
        publisher.start()
        reader.start()
        try:
            out = io.StringIO()
            marked = with_extra_sql(REGISTRY["threads"], MARK_SQL)
            asyncio.run(Rebuilder(s, marked, Options(bulk_batch=400, batch=200, close_enough=100, stream=out)).rebuild())
            rebuilt_at = time.monotonic()
            assert publisher.is_alive() or "catch-up" in out.getvalue()
            assert "cut over" in out.getvalue(), out.getvalue()
            with stack.client() as http:
                v2 = http.get("/v1/threads/preview", headers={"Authorization": f"Bearer {token}"})
            assert generation(v2.headers["etag"]) == 2 and marked_items(v2.content) == (WATCHED, WATCHED)
            publisher.join(120)
            wait_caught_up(s.database_url, s.kafka_bootstrap, "threads", topics)
            asyncio.run(Rebuilder(s, REGISTRY["threads"], Options(stream=out)).rollback())
            rolled_back_at = time.monotonic()
            with stack.client() as http:
                back = http.get("/v1/threads/preview", headers={"Authorization": f"Bearer {token}"})
        finally:
            reader.halt.set()
            reader.join(30)
            publisher.join(120)

        # the previous version's answer again, under a generation no earlier response carried
        assert back.status_code == 200 and back.content == v1.content
        assert generation(back.headers["etag"]) == 3 and back.headers["etag"] not in (v1.headers["etag"], v2.headers["etag"])
        assert versions(s.database_url) == (1, 2, 3, "live")
        assert_tables_equal_fold(s.database_url, everything)

        assert not reader.errors, reader.errors[:3]
        statuses = {status for _, status, _, _ in reader.log}
        assert statuses <= {200, 304}, statuses
        bodies = [(at, generation(tag), marked_items(body)) for at, status, tag, body in reader.log if status == 200]
        assert len(bodies) > 20
        for began, gen, (marks, items) in bodies:
            assert items == WATCHED and marks in (0, WATCHED), f"a response mixed versions: {marks} of {items} marked"
            if gen == 2:
                assert marks == WATCHED, "a v1 body served under the v2 generation"
            if gen == 3:
                assert marks == 0, "a v2 body served under the generation of the rollback"
            if began > rebuilt_at:
                assert gen >= 2, "the previous generation served after the rebuild returned"
            if began > rolled_back_at:
                assert gen == 3, "an earlier generation served after the rollback returned"
        assert {gen for _, gen, _ in bodies} >= {1, 2}
