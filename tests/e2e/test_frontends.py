"""What a browser app on another origin needs: CORS (preflight answered, the headers it must read
exposed) and compressed bodies, with ETags and 304s unchanged."""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import httpx
import pytest

from readside.api.auth import make_token
from tests.e2e.conftest import Stack, running_stack
from tests.support import message, send, started, wait_caught_up

APP = "https://app.example"
RECORDS = [
    *[started(f"f{i:02d}", client="u-fe", provider="u-pro", at=i) for i in range(30)],
    *[message(f"f{i:02d}", f"fm{i:02d}", 100 + i, sender="u-pro", sender_type="provider", content=f"hello {i} " * 10)
      for i in range(30)],
]


@pytest.fixture(scope="module")
def cors_stack(bootstrap: str, pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(bootstrap, pg_admin_url, tmp_path_factory.mktemp("api"), cors_origins=(APP,)) as s:
        send(s.settings, RECORDS)
        wait_caught_up(s.settings.database_url, s.settings.kafka_bootstrap, "threads",
                       [s.settings.topic_prefix + t for t in ("threads.events", "payments.events")])
        yield s


def _token(stack: Stack) -> str:
    return make_token(stack.settings.jwt_secret, "u-fe", [])


def test_a_preflight_from_an_allowed_origin_is_answered(cors_stack: Stack) -> None:
    r = httpx.options(cors_stack.base_url + "/v1/threads/preview", headers={
        "Origin": APP, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, if-none-match, x-readside-after"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == APP
    assert "GET" in r.headers["access-control-allow-methods"]
    allowed = r.headers["access-control-allow-headers"].lower()
    assert {"authorization", "if-none-match", "x-readside-after"} <= {h.strip() for h in allowed.split(",")}


def test_a_preflight_from_another_origin_is_refused(cors_stack: Stack) -> None:
    r = httpx.options(cors_stack.base_url + "/v1/threads/preview", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert r.status_code == 400
    assert "access-control-allow-origin" not in r.headers


def test_an_answer_to_the_app_exposes_etag_and_freshness(cors_stack: Stack) -> None:
    r = httpx.get(cors_stack.base_url + "/v1/threads/preview",
                  headers={"Origin": APP, "Authorization": f"Bearer {_token(cors_stack)}"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == APP
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {"etag", "x-readside-lag", "server-timing"} <= exposed
    # an error still carries the CORS headers, so the app can read its problem+json
    bad = httpx.get(cors_stack.base_url + "/v1/threads/preview?limit=0", headers={"Origin": APP, "Authorization": f"Bearer {_token(cors_stack)}"})
    assert bad.status_code == 400 and bad.headers["access-control-allow-origin"] == APP


def test_without_configured_origins_there_is_no_cors(stack: Stack) -> None:
    r = httpx.options(stack.base_url + "/v1/threads/preview", headers={"Origin": APP, "Access-Control-Request-Method": "GET"})
    assert r.status_code == 405
    assert "access-control-allow-origin" not in r.headers


def test_large_bodies_are_gzipped_and_the_etag_still_revalidates(cors_stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {_token(cors_stack)}", "Accept-Encoding": "gzip"}
    url = cors_stack.base_url + "/v1/threads/preview?limit=30"
    with httpx.Client() as http:
        plain = http.get(url, headers={**headers, "Accept-Encoding": "identity"})
        assert plain.status_code == 200 and "content-encoding" not in plain.headers
        assert len(plain.content) > 1024
        with http.stream("GET", url, headers=headers) as zipped:
            raw = b"".join(zipped.iter_raw())
        assert zipped.headers["content-encoding"] == "gzip"
        assert "accept-encoding" in zipped.headers["vary"].lower() and "authorization" in zipped.headers["vary"].lower()
        assert len(raw) < len(plain.content) / 3
        assert gzip.decompress(raw) == plain.content  # the same answer, byte for byte
        assert zipped.headers["etag"] == plain.headers["etag"]
        again = http.get(url, headers={**headers, "If-None-Match": zipped.headers["etag"]})
        assert again.status_code == 304 and again.content == b""


def test_small_bodies_are_not_compressed(cors_stack: Stack) -> None:
    r = httpx.get(cors_stack.base_url + "/v1/threads/summary",
                  headers={"Authorization": f"Bearer {_token(cors_stack)}", "Accept-Encoding": "gzip"})
    assert r.status_code == 200 and "content-encoding" not in r.headers


def test_an_app_on_another_origin_gets_the_same_answer_as_a_server(cors_stack: Stack) -> None:
    """A request with ``Origin`` goes through CORS; one without takes the hot routes' short path
    (api/fastpath.py): the same status, body and headers, in the same order, but for the CORS ones
    and the timings."""
    url = cors_stack.base_url + "/v1/threads/preview?limit=30"
    auth = {"Authorization": f"Bearer {_token(cors_stack)}"}
    skip = {"date", "server-timing", "access-control-allow-origin", "access-control-expose-headers", "access-control-allow-credentials"}
    with httpx.Client() as http:
        for extra in ({}, {"Accept-Encoding": "gzip"}, {"Accept-Encoding": "identity"}):
            for path in (url, url + "&limit=0", cors_stack.base_url + "/v1/threads/summary"):
                server = http.get(path, headers={**auth, **extra})
                app = http.get(path, headers={**auth, **extra, "Origin": APP})
                assert app.headers["access-control-allow-origin"] == APP
                assert server.status_code == app.status_code and server.content == app.content
                # CORS adds `Vary: Origin` (the allowed origin is named, not `*`)
                cors = [(k, v.removesuffix(", Origin")) for k, v in app.headers.multi_items() if k not in skip]
                assert [(k, v) for k, v in server.headers.multi_items() if k not in skip] == \
                       [(k, v) for k, v in cors if (k, v) != ("vary", "Origin")]
