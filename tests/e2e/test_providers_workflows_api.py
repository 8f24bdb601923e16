"""Provider listings and workflow lists end to end: events in through Kafka, assertions on HTTP."""

from __future__ import annotations

import pytest

from readside.load import Record
from tests.support import as_event, auth, send, wait_caught_up
from tests.unit.test_providers_fold import booking, profile, resent, review
from tests.unit.test_workflows_fold import created, deleted, saved

TOPICS = {"providers": "providers.events", "workflows": "workflows.events"}


def _provider(pid: str, at: float, books: int, ratings: list[int], **kw) -> list[Record]:
    return (
        [profile(pid, at, **kw)]
        + [booking(pid, f"{pid}-b{i}", at + 1 + i) for i in range(books)]
        + [review(pid, f"{pid}-r{i}", r, at + 50 + i) for i, r in enumerate(ratings)]
    )


PROVIDERS = [
    # DJs, under three spellings of the category. A review and a booking of p-dj-1 arrive before its profile.
    review("p-dj-1", "p-dj-1-r9", 4, 0.5),
    booking("p-dj-1", "p-dj-1-early", 0.5),
    *_provider("p-dj-1", 1, 2, [5]),
    *_provider("p-dj-2", 2, 5, [5, 5, 4], category=" dj ", price_visible=False),
    *_provider("p-dj-3", 3, 3, [], avatar_url="data:image/png;base64,AAA", business_name=None),
    *_provider("p-dj-4", 4, 9, [5], status="inactive"),
    *_provider("p-dj-5", 5, 9, [5], status="suspended"),
    # the same category, three raw display strings
    *_provider("p-ss-1", 6, 1, [3], category="Sound Service"),
    *_provider("p-ss-2", 7, 2, [4], category="sound-service"),
    *_provider("p-ss-3", 8, 0, [], category="Sound - Service"),
    # 30 photographers for paging; book counts with ties
    *[r for i in range(30) for r in _provider(f"p-ph-{i:02d}", 10 + i, i % 7, [1 + i % 5], category="Photographer")],
    # a provider whose profile never arrives: not listed
    booking("p-stub", "p-stub-b1", 1),
]
# a retrying producer (same event ids) and a second event for known booking/review ids
PROVIDERS += PROVIDERS[:10] + [resent(r) for r in PROVIDERS if r.value["type"] != "provider.profile_updated"][:20]

WORKFLOWS = [
    created("w-a1", "u-ann", 1, "Onboarding"),
    created("w-a2", "u-ann", 2, "Invoice approval"),
    saved("w-a2", 1, 10, nodes=5),
    saved("w-a2", 2, 20, nodes=12),
    created("w-a3", "u-ann", 3, "Ann's template", template=True),
    created("w-a4", "u-ann", 4, "Gone"),
    deleted("w-a4", 30),
    saved("w-a5", 1, 5),  # never created: not listed
    *[created(f"w-x{i:02d}", "u-ann", 100 + i, f"Flow {i}") for i in range(23)],
    created("w-b1", "u-bob", 5, "Bob's template", template=True),
    saved("w-b1", 1, 25, nodes=4, edges=2),
    created("w-b2", "u-bob", 6, "Bob's own"),
]


def send_and_wait(stack, records: list[Record]) -> None:
    s = stack.settings
    send(s, records)
    for name, topic in TOPICS.items():
        wait_caught_up(s.database_url, s.kafka_bootstrap, name, [s.topic_prefix + topic])


@pytest.fixture(scope="module")
def loaded(stack):
    send_and_wait(stack, PROVIDERS + WORKFLOWS)
    return stack



def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [i["id"] for i in response.json()["items"]]


def time_of(rec: Record) -> str:
    payload = as_event(rec).payload
    moment = getattr(payload, "updated_at", None) or getattr(payload, "created_at", None) or payload.saved_at
    return moment.isoformat().replace("+00:00", "Z")


# -- providers --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        pytest.param(None, ["p-dj-2", "p-dj-1", "p-dj-3"], id="default-most-booked-ties-by-id"),
        pytest.param("most_booked", ["p-dj-2", "p-dj-1", "p-dj-3"], id="most-booked"),
        pytest.param("top_rated", ["p-dj-2", "p-dj-1", "p-dj-3"], id="top-rated-unrated-last"),
        pytest.param("newest", ["p-dj-3", "p-dj-2", "p-dj-1"], id="newest"),
    ],
)
def test_providers_of_a_category_in_each_order(loaded, sort, expected):
    params = {"category": "DJ"} | ({"sort": sort} if sort else {})
    with loaded.client() as http:
        r = http.get("/v1/providers", params=params)  # public: no token
    assert ids(r) == expected
    assert r.json()["total"] == 3 and r.json()["next_cursor"] is None
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "public, max-age=30"
    assert r.headers["etag"].startswith('W/"') and "vary" not in r.headers
    assert "total;dur=" in r.headers["server-timing"]


def test_provider_items_follow_the_contract(loaded):
    with loaded.client() as http:
        items = {i["id"]: i for i in http.get("/v1/providers", params={"category": "dj"}).json()["items"]}
    one, two, three = items["p-dj-1"], items["p-dj-2"], items["p-dj-3"]
    assert one == {
        "id": "p-dj-1", "business_name": "DJ Bob", "avatar_url": "https://cdn.example/b.jpg", "category": "DJ",
        "location": "Cape Town", "hourly_rate_cents": 150000, "price_visible": True, "custom_subtitle": None,
        "rating_avg": 4.5, "rating_count": 2, "book_count": 3,  # the early review and booking count once
        "created_at": time_of(profile("p-dj-1", 1)), "updated_at": time_of(profile("p-dj-1", 1)),
    }
    assert (two["rating_avg"], two["rating_count"], two["book_count"]) == (4.67, 3, 5)
    assert two["hourly_rate_cents"] is None and two["price_visible"] is False and two["category"] == " dj "
    assert three["avatar_url"] == "/v1/img/avatar/p-dj-3" and three["rating_avg"] is None and three["business_name"] is None


@pytest.mark.parametrize(
    "category",
    [pytest.param("sound_service", id="normalized"), pytest.param("Sound - Service", id="mixed-run"),
     pytest.param("  SOUND-service ", id="trimmed-and-lowercased")],
)
def test_category_is_normalized_like_profiles(loaded, category):
    with loaded.client() as http:
        r = http.get("/v1/providers", params={"category": category})
    assert ids(r) == ["p-ss-2", "p-ss-1", "p-ss-3"] and r.json()["total"] == 3


def test_unknown_category_is_empty_and_absent_category_lists_all(loaded):
    with loaded.client() as http:
        none = http.get("/v1/providers", params={"category": "astronaut"})
        everything = http.get("/v1/providers", params={"limit": 50, "sort": "newest"})
    assert none.json() == {"items": [], "next_cursor": None, "total": 0}
    assert everything.json()["total"] == 36  # 3 DJs + 3 sound + 30 photographers; no stub, inactive or suspended
    assert ids(everything)[:3] == ["p-ph-29", "p-ph-28", "p-ph-27"]
    assert not {"p-dj-4", "p-dj-5", "p-stub"} & set(ids(everything))


@pytest.mark.parametrize(
    ("fields", "keys"),
    [
        pytest.param("business_name, book_count", {"id", "business_name", "book_count"}, id="trimmed-plus-id"),
        pytest.param("rating_avg", {"id", "rating_avg"}, id="one"),
        pytest.param("id", {"id"}, id="only-id"),
        pytest.param("", None, id="empty-means-all"),
    ],
)
def test_fields_select_the_item_keys(loaded, fields, keys):
    with loaded.client() as http:
        r = http.get("/v1/providers", params={"category": "dj", "fields": fields})
    items = r.json()["items"]
    assert [i["id"] for i in items] == ["p-dj-2", "p-dj-1", "p-dj-3"]
    for i in items:
        assert set(i) == (keys if keys is not None else {
            "id", "business_name", "avatar_url", "category", "location", "hourly_rate_cents", "price_visible",
            "custom_subtitle", "rating_avg", "rating_count", "book_count", "created_at", "updated_at"})
    if keys and "book_count" in keys:
        assert items[0]["book_count"] == 5


@pytest.mark.parametrize("sort", ["most_booked", "top_rated", "newest"])
def test_paging_through_a_category_never_repeats_or_skips(loaded, sort):
    with loaded.client() as http:
        everything = ids(http.get("/v1/providers", params={"category": "Photographer", "sort": sort, "limit": 50}))
        seen, cursor, pages = [], None, 0
        while True:
            r = http.get("/v1/providers", params={"category": "Photographer", "sort": sort, "limit": 12, "fields": "id"}
                         | ({"cursor": cursor} if cursor else {}))
            seen += ids(r)
            assert r.json()["total"] == 30
            pages, cursor = pages + 1, r.json()["next_cursor"]
            if cursor is None:
                break
    assert pages == 3 and seen == everything and len(set(seen)) == 30


def test_paging_most_booked_while_bookings_move_providers_never_repeats_or_skips(stack):
    # Its own category, so the module's other tests keep their figures.
    send_and_wait(stack, [r for i in range(20) for r in _provider(f"p-mv-{i:02d}", 500 + i, i, [], category="Mover")])
    params = {"category": "mover", "sort": "most_booked", "limit": 7, "fields": "id,book_count"}
    with stack.client() as http:
        page = http.get("/v1/providers", params=params).json()
        seen = [i["id"] for i in page["items"]]  # p-mv-19 .. p-mv-13
        # Between pages: a provider not yet seen jumps above the cursor (bookings only grow),
        # another not yet seen goes inactive and leaves the listing.
        send_and_wait(stack, [booking("p-mv-05", f"p-mv-05-x{i}", 900 + i) for i in range(30)]
             + [profile("p-mv-08", 950, category="Mover", status="inactive")])
        cursor = page["next_cursor"]
        while cursor:
            page = http.get("/v1/providers", params=params | {"cursor": cursor}).json()
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
    unchanged = {f"p-mv-{i:02d}" for i in range(20)} - {"p-mv-05", "p-mv-08"}
    assert len(seen) == len(set(seen)), seen
    assert unchanged <= set(seen), sorted(unchanged - set(seen))
    assert "p-mv-08" not in seen


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"limit": "0"}, id="limit-low"),
        pytest.param({"limit": "51"}, id="limit-high"),
        pytest.param({"sort": "popular"}, id="unknown-sort"),
        pytest.param({"fields": "id,owner"}, id="unknown-field"),
        pytest.param({"fields": "Book_count"}, id="fields-case-sensitive"),
        pytest.param({"page": "2"}, id="unknown-param"),
        pytest.param({"cursor": "garbage!!"}, id="garbled-cursor"),
    ],
)
def test_bad_provider_parameters_get_400(loaded, params):
    with loaded.client() as http:
        r = http.get("/v1/providers", params=params)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "/problems/invalid-parameter" and r.headers["cache-control"] == "no-store"


def test_provider_cursor_is_bound_to_the_parameters(loaded):
    base = {"category": "photographer", "limit": 5}
    with loaded.client() as http:
        cursor = http.get("/v1/providers", params=base).json()["next_cursor"]
        for changed in ({"limit": 6}, {"sort": "newest"}, {"category": "dj"}, {"fields": "id"}):
            bad = http.get("/v1/providers", params=base | changed | {"cursor": cursor})
            assert bad.status_code == 400, changed
        assert http.get("/v1/providers", params=base | {"category": "Photographer", "cursor": cursor}).status_code == 200


def test_provider_etag_is_per_category_and_changes_with_the_next_event(loaded):
    with loaded.client() as http:
        dj = http.get("/v1/providers", params={"category": "dj"})
        ph = http.get("/v1/providers", params={"category": "photographer"})
        again = http.get("/v1/providers", params={"category": "dj"}, headers={"If-None-Match": dj.headers["etag"]})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == dj.headers["etag"]
        assert again.headers["cache-control"] == "public, max-age=30"
        send_and_wait(loaded, [booking("p-dj-3", "late-1", 500), booking("p-dj-3", "late-2", 501), booking("p-dj-3", "late-3", 502)])
        changed = http.get("/v1/providers", params={"category": "dj"}, headers={"If-None-Match": dj.headers["etag"]})
        assert changed.status_code == 200 and changed.headers["etag"] != dj.headers["etag"]
        assert ids(changed) == ["p-dj-3", "p-dj-2", "p-dj-1"] and changed.json()["items"][0]["book_count"] == 6
        other = http.get("/v1/providers", params={"category": "photographer"}, headers={"If-None-Match": ph.headers["etag"]})
        assert other.status_code == 304  # another category's listing did not change


def test_a_profile_change_moves_the_provider_between_listings(loaded):
    send_and_wait(loaded, [profile("p-ss-3", 600, category="MC")])
    with loaded.client() as http:
        sound = http.get("/v1/providers", params={"category": "sound_service"})
        mc = http.get("/v1/providers", params={"category": "mc"})
    assert ids(sound) == ["p-ss-2", "p-ss-1"] and sound.json()["total"] == 2
    assert ids(mc) == ["p-ss-3"] and mc.json()["total"] == 1
    assert mc.json()["items"][0]["created_at"] == time_of(profile("p-ss-3", 8))  # the first snapshot's time


# -- workflows ------------------------------------------------------------------------------------

def test_my_workflows_lists_the_viewers_own_newest_first(loaded):
    with loaded.client() as http:
        r = http.get("/v1/workflows", params={"limit": 100}, headers=auth(loaded, "u-ann"))
    got = ids(r)
    assert got[:23] == [f"w-x{i:02d}" for i in reversed(range(23))]
    assert got[23:] == ["w-a2", "w-a3", "w-a1"]  # w-a2 updated at its latest save; deleted w-a4 left out
    assert r.headers["cache-control"] == "private, no-cache" and "Authorization" in {v.strip() for v in r.headers["vary"].split(",")}
    assert r.json()["next_cursor"] is None
    items = {i["id"]: i for i in r.json()["items"]}
    assert items["w-a2"] == {
        "id": "w-a2", "name": "Invoice approval", "latest_version": 2, "node_count": 12, "edge_count": 11,
        "is_template": False, "created_at": time_of(created("w-a2", at=2)), "updated_at": time_of(saved("w-a2", 2, 20)),
    }
    assert items["w-a1"]["latest_version"] is None and items["w-a1"]["node_count"] == 0
    assert items["w-a3"]["is_template"] is True


def test_templates_are_every_owners_templates(loaded):
    with loaded.client() as http:
        bob = http.get("/v1/templates", headers=auth(loaded, "u-bob"))
        bobs_own = http.get("/v1/workflows", headers=auth(loaded, "u-bob"))
    assert ids(bob) == ["w-b1", "w-a3"]
    assert bob.json()["items"][0]["edge_count"] == 2
    assert ids(bobs_own) == ["w-b1", "w-b2"]


@pytest.mark.parametrize("path", ["/v1/workflows", "/v1/templates"])
def test_workflow_lists_need_a_token(loaded, path):
    with loaded.client() as http:
        r = http.get(path, params={"limit": 500})  # 401 before 400
    assert r.status_code == 401 and r.json()["type"] == "/problems/unauthorized"


@pytest.mark.parametrize(
    "params",
    [pytest.param({"limit": "0"}, id="limit-low"), pytest.param({"limit": "101"}, id="limit-high"),
     pytest.param({"owner": "u-bob"}, id="unknown-param"), pytest.param({"cursor": "xx"}, id="garbled-cursor")],
)
@pytest.mark.parametrize("path", ["/v1/workflows", "/v1/templates"])
def test_bad_workflow_parameters_get_400(loaded, path, params):
    with loaded.client() as http:
        r = http.get(path, params=params, headers=auth(loaded, "u-ann"))
    assert r.status_code == 400 and r.json()["type"] == "/problems/invalid-parameter"


def test_workflow_cursor_is_bound_to_viewer_and_list(loaded):
    with loaded.client() as http:
        cursor = http.get("/v1/workflows", params={"limit": 5}, headers=auth(loaded, "u-ann")).json()["next_cursor"]
        assert http.get("/v1/workflows", params={"limit": 5, "cursor": cursor}, headers=auth(loaded, "u-bob")).status_code == 400
        assert http.get("/v1/templates", params={"limit": 5, "cursor": cursor}, headers=auth(loaded, "u-ann")).status_code == 400
        assert http.get("/v1/workflows", params={"limit": 5, "cursor": cursor}, headers=auth(loaded, "u-ann")).status_code == 200


def test_workflow_etags_follow_the_owners_and_templates_lists(loaded):
    with loaded.client() as http:
        first = {
            (p, u): http.get(p, headers=auth(loaded, u)).headers["etag"]
            for p in ("/v1/workflows", "/v1/templates") for u in ("u-ann", "u-bob")
        }
        for (p, u), tag in first.items():
            assert http.get(p, headers=auth(loaded, u) | {"If-None-Match": tag}).status_code == 304
        send_and_wait(loaded, [saved("w-b2", 1, 700, nodes=2)])  # Bob's own list changes; no template does
        after = {k: http.get(k[0], headers=auth(loaded, k[1]) | {"If-None-Match": tag}).status_code for k, tag in first.items()}
        assert after == {("/v1/workflows", "u-ann"): 304, ("/v1/workflows", "u-bob"): 200,
                         ("/v1/templates", "u-ann"): 304, ("/v1/templates", "u-bob"): 304}
        assert ids(http.get("/v1/workflows", headers=auth(loaded, "u-bob")))[0] == "w-b2"


def test_paging_while_workflows_change_never_repeats_an_item(loaded):
    with loaded.client() as http:
        page = http.get("/v1/workflows", params={"limit": 10}, headers=auth(loaded, "u-ann")).json()
        seen = [i["id"] for i in page["items"]]
        # one workflow further down is saved (moves to the top), another is deleted
        send_and_wait(loaded, [saved("w-x03", 1, 800), deleted("w-x05", 801)])
        cursor = page["next_cursor"]
        while cursor:
            page = http.get("/v1/workflows", params={"limit": 10, "cursor": cursor}, headers=auth(loaded, "u-ann")).json()
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
    unchanged = {f"w-x{i:02d}" for i in range(23)} - {"w-x03", "w-x05"} | {"w-a1", "w-a2", "w-a3"}
    assert len(seen) == len(set(seen))
    assert unchanged <= set(seen) and "w-x05" not in seen
