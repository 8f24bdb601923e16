"""Avatars given as ``data:`` URLs (CONTRACT §2 previews and listings; docs/decisions.md
"Avatars"): decoding, the URL a list ships, and whose avatar is current — as tables of cases,
plus Hypothesis properties: any arrival order and any batching pick the same avatar."""

from __future__ import annotations

import base64
import random
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from readside.load import Record, thread_stream
from readside.readmodels.avatars.fold import MAX_BYTES, Image, decode, latest, offers, route_url, shipped, user_avatars
from readside.readmodels.providers.fold import fold_all as fold_providers
from readside.readmodels.providers.fold import render as render_card
from readside.readmodels.threads.fold import fold_all, render
from tests.support import as_event, envelope, started
from tests.unit.test_providers_fold import profile

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")
B64 = base64.b64encode(PNG).decode()
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(f"data:image/png;base64,{B64}", Image("image/png", PNG), id="base64"),
        pytest.param("data:image/svg+xml," + quote(SVG), Image("image/svg+xml", SVG.encode()), id="percent-encoded"),
        pytest.param("data:image/svg+xml;utf8," + SVG, Image("image/svg+xml", SVG.encode()), id="raw-with-params"),
        pytest.param(f"data:IMAGE/PNG;BASE64,{B64}", Image("image/png", PNG), id="case-insensitive"),
        pytest.param(f"data:image/png;name=a.png;base64,{B64}", Image("image/png", PNG), id="params-dropped"),
        pytest.param(f"data: image/png ; base64,{B64}", Image("image/png", PNG), id="spaces-around"),
        pytest.param(f"data:image/png;base64,{B64[:20]}\n {B64[20:]}".rstrip("="), Image("image/png", PNG),
                     id="whitespace-and-no-padding"),
        pytest.param("data:image/png;base64," + quote(B64, safe=""), Image("image/png", PNG), id="percent-encoded-base64"),
        pytest.param("data:image/png;base64,AAA", Image("image/png", b"\0\0"), id="the-contract-tests-one"),
        pytest.param("data:image/gif,%00%01%ff", Image("image/gif", b"\x00\x01\xff"), id="binary-percent"),
    ],
)
def test_a_data_url_of_an_image_decodes_to_its_exact_bytes(url: str, expected: Image) -> None:
    assert decode(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(None, id="null"),
        pytest.param("https://cdn.example/a.jpg", id="https"),
        pytest.param("DATA:image/png;base64,AAAA", id="scheme-not-data:"),  # lists ship it as is too
        pytest.param("data:,hello", id="no-media-type-is-text"),
        pytest.param("data:text/html,<script>alert(1)</script>", id="text-html"),
        pytest.param("data:application/octet-stream;base64,AAAA", id="not-an-image"),
        pytest.param("data:image/,AAAA", id="no-subtype"),
        pytest.param("data:image/png base64,AAAA", id="bad-subtype"),
        pytest.param("data:image/png;base64", id="no-comma"),
        pytest.param("data:image/png;base64,", id="empty"),
        pytest.param("data:image/png,", id="empty-raw"),
        pytest.param("data:image/png;base64,A", id="base64-length-1-mod-4"),
        pytest.param("data:image/png;base64,AA@A", id="base64-bad-char"),
        pytest.param("data:image/png;base64,AA-_", id="base64url-alphabet"),
        pytest.param("data:image/png;base64,AA=A", id="padding-inside"),
    ],
)
def test_anything_else_is_no_avatar(url: str | None) -> None:
    assert decode(url) is None


def test_the_size_cap_is_on_the_decoded_bytes() -> None:
    at_cap = b"\x89" * MAX_BYTES
    assert decode("data:image/png;base64," + base64.b64encode(at_cap).decode()) == Image("image/png", at_cap)
    over = base64.b64encode(at_cap + b"\x89").decode()
    assert decode("data:image/png;base64," + over) is None
    # percent-encoding triples the URL but not the bytes: still within the cap
    assert decode("data:image/png," + quote(at_cap[: MAX_BYTES // 4])) is not None
    assert decode("data:image/png," + "%41" * (MAX_BYTES + 1)) is None
    # a URL too long to decode within the cap is not decoded at all
    assert decode("data:image/png;base64," + "A" * (5 * MAX_BYTES)) is None


def test_the_etag_names_the_type_and_the_bytes() -> None:
    a, b = Image("image/png", PNG), Image("image/png", PNG + b"x")
    assert a.etag == Image("image/png", PNG).etag and len(a.etag) == 32
    assert len({a.etag, b.etag, Image("image/gif", PNG).etag}) == 3


@pytest.mark.parametrize(
    ("owner", "url"),
    [
        pytest.param("u-56", "/v1/img/avatar/u-56", id="plain"),
        pytest.param("u_5.6~x", "/v1/img/avatar/u_5.6~x", id="unreserved-kept"),
        pytest.param("a/b", "/v1/img/avatar/a%2Fb", id="slash"),
        pytest.param("a#b", "/v1/img/avatar/a%23b", id="hash"),
        pytest.param("a?b", "/v1/img/avatar/a%3Fb", id="question"),
        pytest.param("100%", "/v1/img/avatar/100%25", id="percent"),
        pytest.param("é x", "/v1/img/avatar/%C3%A9%20x", id="utf8-and-space"),
    ],
)
def test_the_route_url_holds_the_id_as_one_path_segment(owner: str, url: str) -> None:
    assert route_url(owner) == url
    assert shipped("data:image/png;base64,AAA", owner) == url
    assert shipped("data:text/plain,unusable", owner) == url  # the contract's rule is on the scheme
    assert shipped("https://x/a.jpg", owner) == "https://x/a.jpg" and shipped(None, owner) is None


def test_previews_and_cards_ship_the_encoded_route() -> None:
    rows = {r.role: r for r in render(fold_all([as_event(started("t1", client="c/1", provider="p#1",
                                                                    client_avatar="data:image/png;base64,AAA",
                                                                    provider_avatar="data:image/png;base64,AAA"))])["t1"])}
    assert rows["client"].item["counterparty"]["avatar_url"] == "/v1/img/avatar/p%231"
    assert rows["provider"].item["counterparty"]["avatar_url"] == "/v1/img/avatar/c%2F1"
    card = render_card(fold_providers([as_event(profile("p/1", 1, avatar_url="data:image/png;base64,AAA"))])["p/1"])
    assert card is not None and card.item["avatar_url"] == "/v1/img/avatar/p%2F1"


# -- whose avatar is current --------------------------------------------------------------------

DATA_A = f"data:image/png;base64,{B64}"
DATA_B = "data:image/svg+xml," + quote(SVG)
HUGE = "data:image/png;base64," + base64.b64encode(b"\0" * (MAX_BYTES + 3)).decode()


def _current(records: list[Record]) -> dict[str, Image | None]:
    return {user: image for user, (_, image) in user_avatars(fold_all(as_event(r) for r in records).values()).items()}


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        pytest.param([started("t1", client="u", client_avatar=DATA_A)], Image("image/png", PNG), id="one-thread"),
        pytest.param([started("t2", client="u", at=5, client_avatar=DATA_B), started("t1", client="u", at=1, client_avatar=DATA_A)],
                     Image("image/svg+xml", SVG.encode()), id="latest-created_at-wins-whatever-arrives-last"),
        pytest.param([started("t2", client="u", at=1, client_avatar=DATA_A), started("t1", client="u", at=1, client_avatar=DATA_B)],
                     Image("image/png", PNG), id="equal-times-by-thread-id"),
        pytest.param([started("t1", client="u", at=1, client_avatar=DATA_A), started("t2", provider="u", at=5, provider_avatar=DATA_B)],
                     Image("image/svg+xml", SVG.encode()), id="as-provider-too"),
        pytest.param([started("t1", client="u", at=1, client_avatar=DATA_A), started("t2", client="u", at=5, client_avatar="https://x/u.jpg")],
                     None, id="a-later-https-avatar-removes-it"),
        pytest.param([started("t1", client="u", at=1, client_avatar=DATA_A), started("t2", client="u", at=5)],
                     None, id="a-later-null-removes-it"),
        pytest.param([started("t1", client="u", at=1, client_avatar=DATA_A), started("t2", client="u", at=5, client_avatar=HUGE)],
                     None, id="a-later-oversized-one-is-no-avatar"),
        pytest.param([started("t2", client="u", at=5, client_avatar="https://x/u.jpg"), started("t1", client="u", at=1, client_avatar=DATA_A)],
                     None, id="an-earlier-thread-arriving-later-changes-nothing"),
        pytest.param([started("t1", client="u", provider="u", client_avatar=DATA_A, provider_avatar=DATA_B)],
                     Image("image/svg+xml", SVG.encode()), id="both-sides-of-one-thread-provider-role-wins"),
    ],
)
def test_a_users_avatar_is_their_latest_threads(records: list[Record], expected: Image | None) -> None:
    assert _current(records)["u"] == expected


def test_a_second_thread_started_of_a_thread_offers_nothing() -> None:
    first = started("t1", client="u", at=1, client_avatar=DATA_A)
    second = started("t1", client="u", at=9, client_avatar=DATA_B)  # ignored: first wins
    assert _current([first, second])["u"] == Image("image/png", PNG)


# -- properties ----------------------------------------------------------------------------------

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
AVATARS = [None, "https://cdn.example/x.jpg", DATA_A, DATA_B, HUGE, "data:,not-an-image", "data:image/png;base64,A"]


def _with_avatars(stream: list[Record], rnd: random.Random) -> list[Record]:
    """``stream`` with each thread's two avatars drawn at random (load streams keep one per user),
    and thread times that tie now and then (ties go to the thread id)."""
    out = []
    for rec in stream:
        if rec.value["type"] == "thread.started":
            payload = dict(rec.value["payload"])
            payload["client"] = dict(payload["client"], avatar_url=rnd.choice(AVATARS))
            payload["provider"] = dict(payload["provider"], avatar_url=rnd.choice(AVATARS))
            if rnd.random() < 0.3:
                payload["created_at"] = "2026-11-22T10:00:00Z"
            rec = Record(rec.topic, rec.key, envelope("thread.started", payload, rec.value["event_id"]))
        out.append(rec)
    return out


streams = st.builds(
    lambda seed, threads: thread_stream(threads=threads, messages_per_thread=(0, 2), users=4, seed=seed),
    st.integers(0, 10_000),
    st.integers(2, 10),
)


@SETTINGS
@given(streams, st.randoms(use_true_random=False))
def test_any_arrival_order_picks_the_same_avatars(stream, rnd):
    stream = _with_avatars(stream, rnd)
    shuffled = list(stream)
    rnd.shuffle(shuffled)
    assert _current(shuffled) == _current(stream)


@SETTINGS
@given(streams, st.randoms(use_true_random=False))
def test_offers_merged_batch_by_batch_equal_one_pass(stream, rnd):
    # What the store does: per batch, the latest offer per user, merged into the stored register.
    stream = _with_avatars(stream, rnd)
    rnd.shuffle(stream)
    starts = [o for state in fold_all(as_event(r) for r in stream).values() if state.started
              for o in offers(state.thread_id, state.started)]
    rnd.shuffle(starts)
    stored: dict = {}
    i = 0
    while i < len(starts):
        size = rnd.randint(1, 5)
        stored = latest([*stored.values(), *latest(starts[i : i + size]).values()])
        i += size
    assert {u: decode(o.url) for u, o in stored.items()} == _current(stream)


@SETTINGS
@given(st.randoms(use_true_random=False))
def test_a_providers_avatar_follows_its_latest_snapshot_in_any_order(rnd):
    snapshots = [profile("p-1", rnd.randint(0, 5), avatar_url=rnd.choice(AVATARS), location=str(i)) for i in range(6)]
    shuffled = list(snapshots)
    rnd.shuffle(shuffled)

    def image(records: list[Record]) -> Image | None:
        state = fold_providers(as_event(r) for r in records)["p-1"]
        return decode(state.profile.avatar_url)  # type: ignore[union-attr]

    assert image(shuffled) == image(snapshots)
