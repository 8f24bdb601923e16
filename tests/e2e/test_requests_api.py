"""Technician views: events in through Kafka, HTTP out, compared with the pure fold's brute force."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from readside.load import Record, request_stream
from readside.readmodels.requests.fold import RequestRow
from readside.readmodels.requests.views import TICKET_TYPES, VIEWS, in_view
from readside.shared.jsonbytes import dumps, loads
from tests import support
from tests.e2e.conftest import running_stack
from tests.support import dedupe, projection_topics, send, wait_caught_up, wait_until
from tests.unit.test_requests_fold import assigned, created, rows_of, said, taken, updated

PATH = "/v1/requests/technician-views"


def _stamp(d: datetime) -> str:
    return d.isoformat().replace("+00:00", "Z")


def _records() -> list[Record]:
    now = datetime.now(UTC)
    stream = request_stream(requests=120, technicians=4, seed=31, start=now - timedelta(days=12))
    # A few hand-made requests in business unit 77 with clear margins around the windows.
    old, recent = _stamp(now - timedelta(days=20)), _stamp(now - timedelta(hours=3))
    hand = [
        created("h-1", stamp=old, bu=77, priority="urgent"),
        taken("h-1", "tech-1", 0, stamp=recent),
        said("h-1", "hm-1", 0, role="requester", content="  The printer\n\nis   still offline  ", stamp=recent),
        created("h-2", stamp=old, bu=77, parent="h-1"),
        created("h-3", stamp=old, bu=77, status="pending_requester"),
        assigned("h-3", ["tech-2", "tech-1"], 0, stamp=old),
        updated("h-3", 0, stamp=recent, status="solved"),
    ]
    return stream + hand


RECORDS = _records()


@pytest.fixture(scope="module")
def loaded(stack):
    s = stack.settings
    send(s, RECORDS)
    wait_caught_up(s.database_url, s.kafka_bootstrap, "requests", projection_topics(s, "requests"))
    return stack


def auth(stack, sub: str = "tech-1", roles: list[str] | None = None) -> dict[str, str]:
    """A technician's header by default (``tests.support.auth`` with other defaults)."""
    return support.auth(stack, sub, ["technician"] if roles is None else roles)


_FOLDED: dict[int, list[RequestRow]] = {}


def _rows() -> list[RequestRow]:
    if len(RECORDS) not in _FOLDED:  # RECORDS only grows
        _FOLDED[len(RECORDS)] = [r for r in rows_of(dedupe(RECORDS)).values() if r.listed]
    return _FOLDED[len(RECORDS)]


def _members(rows: list[RequestRow], view: str, tech: str, bu: int | None, now: datetime) -> list[RequestRow]:
    found = [r for r in rows if in_view(r, view, tech, now) and (bu is None or r.business_unit_id == bu)]
    return sorted(found, key=lambda r: (r.updated_at, r.request_id), reverse=True)


def _kind(rows: list[RequestRow], kind: str) -> list[RequestRow]:
    return [r for r in rows if kind == "all" or r.is_subtask == (kind == "subtasks")]


def expected(rows: list[RequestRow], tech: str, now: datetime, view: str = "unassigned", bu: int | None = None,
             ticket_type: str = "all", page: int = 1, per_page: int = 20) -> dict:
    members = _members(rows, view, tech, bu, now)
    typed = _kind(members, ticket_type)
    return {
        "data": [loads(dumps(r.item)) for r in typed[(page - 1) * per_page: page * per_page]],
        "counts": {v: len(_members(rows, v, tech, bu, now)) for v in VIEWS},
        "filter_counts": {k: len(_kind(members, k)) for k in TICKET_TYPES},
        "total": len(typed),
        "page": page,
        "per_page": per_page,
    }


def get_checked(http, stack, tech: str, params: dict, path: str = PATH) -> dict:
    """GET and compare with the brute force at the request's time; the clock may move a request
    out of a window during the call, so retry when the answers before and after it differ."""
    rows = _rows()
    query = {k: v for k, v in params.items() if v is not None}
    args = {k: v for k, v in params.items() if k in ("view", "bu", "ticket_type", "page", "per_page") and v is not None}
    for _ in range(3):
        before = datetime.now(UTC)
        r = http.get(path, params={("business_unit_id" if k == "bu" else k): v for k, v in query.items()}, headers=auth(stack, tech))
        after = datetime.now(UTC)
        assert r.status_code == 200, r.text
        want = [expected(rows, tech, t, **args) for t in (before, after)]
        if path.endswith("/counts"):
            want = [{"counts": w["counts"], "filter_counts": w["filter_counts"]} for w in want]
        if want[0] == want[1]:
            assert r.json() == want[0], (tech, params)
            return r.json()
    raise AssertionError("the windows kept moving during the requests")


def test_every_view_and_ticket_type_equals_the_brute_force(loaded):
    units = sorted({r.business_unit_id for r in _rows()})
    assert 77 in units
    with loaded.client() as http:
        for tech in ("tech-1", "tech-3", "tech-none"):
            for bu in (None, units[0], 77):
                for view in VIEWS:
                    for kind in TICKET_TYPES:
                        get_checked(http, loaded, tech, {"view": view, "bu": bu, "ticket_type": kind, "per_page": 100})


def test_counts_endpoint_equals_the_brute_force(loaded):
    with loaded.client() as http:
        for view in VIEWS:
            for bu in (None, 2):
                body = get_checked(http, loaded, "tech-2", {"view": view, "bu": bu}, path=PATH + "/counts")
                assert set(body) == {"counts", "filter_counts"}
        assert sum(get_checked(http, loaded, "tech-2", {}, path=PATH + "/counts")["counts"].values()) > 0


def test_hand_made_requests(loaded):
    with loaded.client() as http:
        mine = get_checked(http, loaded, "tech-1", {"view": "my_unsolved", "bu": 77})
        assert [i["id"] for i in mine["data"]] == ["h-1"]
        item = mine["data"][0]
        assert item["last_message"]["content"] == "The printer is still offline"
        assert item["last_message"]["sender_role"] == "requester"
        assert item["technician_unread"] is True and item["requester_unread"] is False
        assert item["is_subtask"] is False and item["priority"] == "urgent"
        assert mine["counts"]["all_your_requests"] == 2 and mine["counts"]["urgent_high_priority"] == 1
        solved = get_checked(http, loaded, "tech-1", {"view": "recently_solved", "bu": 77})
        assert [i["id"] for i in solved["data"]] == ["h-3"]
        assert solved["data"][0]["assignee_ids"] == ["tech-1", "tech-2"]
        assert solved["data"][0]["solved_at"] == solved["data"][0]["updated_at"]
        sub = get_checked(http, loaded, "tech-1", {"view": "unassigned", "bu": 77, "ticket_type": "subtasks"})
        assert [i["id"] for i in sub["data"]] == ["h-2"] and sub["data"][0]["parent_id"] == "h-1"
        assert sub["filter_counts"] == {"all": 1, "parents": 0, "subtasks": 1} and sub["total"] == 1


def test_pages_follow_each_other_and_a_page_past_the_end_is_empty(loaded):
    with loaded.client() as http:
        ids = []
        first = get_checked(http, loaded, "tech-1", {"view": "all_unsolved", "per_page": 7})
        total = first["total"]
        assert total > 14
        for page in range(1, total // 7 + 3):
            body = get_checked(http, loaded, "tech-1", {"view": "all_unsolved", "per_page": 7, "page": page})
            ids += [i["id"] for i in body["data"]]
            assert body["total"] == total and body["page"] == page and body["per_page"] == 7
        assert len(ids) == len(set(ids)) == total
        past = get_checked(http, loaded, "tech-1", {"view": "all_unsolved", "page": 10_000})
        assert past["data"] == [] and past["total"] == total
        default = get_checked(http, loaded, "tech-1", {})
        assert default["per_page"] == 20 and default["page"] == 1
        r = http.get(PATH, params={"business_unit_id": "", "view": ""}, headers=auth(loaded))
        assert r.status_code == 200 and r.json()["total"] == default["total"]  # empty means "not given"


def test_headers_etag_and_304_until_an_event_changes_the_view(loaded):
    s = loaded.settings
    with loaded.client() as http:
        params = {"view": "unassigned", "business_unit_id": "78"}
        first = http.get(PATH, params=params, headers=auth(loaded))
        assert first.status_code == 200 and first.json()["total"] == 0
        assert first.headers["content-type"] == "application/json"
        assert first.headers["cache-control"] == "private, no-cache"
        assert "Authorization" in {v.strip() for v in first.headers["vary"].split(",")}
        assert "db;dur=" in first.headers["server-timing"]
        etag = first.headers["etag"]
        assert etag.startswith('W/"')
        again = http.get(PATH, params=params, headers=auth(loaded) | {"If-None-Match": etag})
        if again.status_code == 200:  # the minute turned between the two calls: one more try
            etag = again.headers["etag"]
            again = http.get(PATH, params=params, headers=auth(loaded) | {"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        assert again.headers["cache-control"] == "private, no-cache"
        other = http.get(PATH, params=params, headers=auth(loaded, "tech-2") | {"If-None-Match": etag})
        assert other.status_code == 200  # bound to the viewer
        now = _stamp(datetime.now(UTC))
        send(s, [created("h-78", stamp=now, bu=78)])
        wait_caught_up(s.database_url, s.kafka_bootstrap, "requests", projection_topics(s, "requests"))
        changed = http.get(PATH, params=params, headers=auth(loaded) | {"If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag
        assert [i["id"] for i in changed.json()["data"]] == ["h-78"]
        counts = http.get(PATH + "/counts", params={"business_unit_id": "78"}, headers=auth(loaded))
        assert counts.json()["counts"]["new_today"] == 1 and counts.json()["filter_counts"]["all"] == 1
        assert counts.headers["cache-control"] == "private, no-cache" and counts.headers["etag"].startswith('W/"')
    RECORDS.append(created("h-78", stamp=now, bu=78))  # keep the brute force in step for later tests


@pytest.fixture(scope="module")
def cached(bootstrap, pg_admin_url, redis_url, tmp_path_factory):
    with running_stack(bootstrap, pg_admin_url, tmp_path_factory.mktemp("api"), redis_url=redis_url) as s:
        yield s


def test_cached_bodies_and_304s_follow_commits(cached):
    s = cached.settings

    def send_and_wait(*records: Record) -> None:
        send(s, records)
        wait_caught_up(s.database_url, s.kafka_bootstrap, "requests", projection_topics(s, "requests"))

    send_and_wait(created("c-1", stamp=_stamp(datetime.now(UTC)), bu=501))
    params = {"view": "unassigned", "business_unit_id": "501"}
    with cached.client() as http:
        def ids(view: str = "unassigned") -> list[str]:
            r = http.get(PATH, params=params | {"view": view}, headers=auth(cached))
            assert r.status_code == 200, r.text
            return [i["id"] for i in r.json()["data"]]

        wait_until(lambda: ids() == ["c-1"], 10, "the new request to be listed")
        for _ in range(2):  # the minute may turn between two calls: then once more
            first = http.get(PATH, params=params, headers=auth(cached))
            second = http.get(PATH, params=params, headers=auth(cached) | {"If-None-Match": first.headers["etag"]})
            if second.headers["etag"] == first.headers["etag"]:
                break
        assert second.status_code == 304 and second.headers["x-cache"] == "HIT"
        third = http.get(PATH, params=params, headers=auth(cached))
        assert third.headers["x-cache"] == "HIT" and third.content == first.content
        send_and_wait(taken("c-1", "tech-1", 0, stamp=_stamp(datetime.now(UTC))))
        wait_until(lambda: ids() == [], 10, "the taken request to leave the unassigned view")
        assert ids("my_unsolved") == ["c-1"]
        after = http.get(PATH, params=params, headers=auth(cached) | {"If-None-Match": first.headers["etag"]})
        assert after.status_code == 200 and after.headers["etag"] != first.headers["etag"]


SECRET = "e2e-secret-0123456789-abcdefghijklmnop"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"Authorization": "Bearer not-a-jwt"}, id="garbled"),
        pytest.param({"Authorization": "Bearer " + jwt.encode({"sub": "tech-1", "roles": ["technician"], "exp": int(time.time()) - 60}, SECRET, algorithm="HS256")}, id="expired"),
        pytest.param({"Authorization": "Bearer " + jwt.encode({"sub": "tech-1", "roles": ["technician"], "exp": int(time.time()) + 600}, "wrong-secret-0123456789-abcdefghijklmnop", algorithm="HS256")}, id="wrong-signature"),
    ],
)
@pytest.mark.parametrize("path", [PATH, PATH + "/counts"])
def test_unauthenticated_requests_get_401_before_anything_else(stack, headers, path):
    with stack.client() as http:
        r = http.get(path, headers=headers, params={"view": "nope"})
    assert r.status_code == 401 and r.json()["type"] == "/problems/unauthorized"
    assert r.headers["content-type"] == "application/problem+json" and r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("roles", [pytest.param([], id="no-roles"), pytest.param(["requester", "admin"], id="other-roles")])
@pytest.mark.parametrize("path", [PATH, PATH + "/counts"])
def test_non_technicians_get_403_before_parameter_errors(stack, roles, path):
    with stack.client() as http:
        r = http.get(path, headers=auth(stack, "u-7", roles), params={"view": "nope"})
    assert r.status_code == 403 and r.json()["type"] == "/problems/forbidden"
    assert r.headers["cache-control"] == "no-store" and "total;dur=" in r.headers["server-timing"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        pytest.param(PATH, {"view": "everything"}, id="unknown-view"),
        pytest.param(PATH, {"ticket_type": "tasks"}, id="unknown-ticket-type"),
        pytest.param(PATH, {"page": "0"}, id="page-zero"),
        pytest.param(PATH, {"page": "-1"}, id="page-negative"),
        pytest.param(PATH, {"page": "two"}, id="page-text"),
        pytest.param(PATH, {"per_page": "0"}, id="per-page-zero"),
        pytest.param(PATH, {"per_page": "101"}, id="per-page-high"),
        pytest.param(PATH, {"business_unit_id": "three"}, id="business-unit-text"),
        pytest.param(PATH, {"business_unit_id": "1.5"}, id="business-unit-fraction"),
        pytest.param(PATH, {"limit": "5"}, id="unknown-parameter"),
        pytest.param(PATH, [("view", "unassigned"), ("view", "in_progress")], id="repeated-parameter"),
        pytest.param(PATH + "/counts", {"view": "everything"}, id="counts-unknown-view"),
        pytest.param(PATH + "/counts", {"page": "1"}, id="counts-takes-no-page"),
        pytest.param(PATH + "/counts", {"business_unit_id": "x"}, id="counts-business-unit-text"),
    ],
)
def test_bad_parameters_get_400(stack, path, params):
    with stack.client() as http:
        r = http.get(path, params=params, headers=auth(stack))
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "/problems/invalid-parameter" and r.json()["status"] == 400
    assert r.headers["content-type"] == "application/problem+json"
