"""The provider listing fold and card rules (CONTRACT §1 "Service providers", §2 `GET /v1/providers`,
§3 Providers), as tables of cases, plus Hypothesis properties: duplicates apply once, and any
arrival order — a booking or a review before the first snapshot included — projects like time order.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from readside.load import Record, provider_stream
from readside.readmodels.providers.fold import (
    ProviderState,
    exact_mean,
    fold,
    fold_all,
    fold_into,
    normalize_category,
    rating_avg,
    render,
)
from readside.schemas import BookingConfirmed, ReviewPosted
from tests.support import as_event, dedupe, envelope, record, ts

# -- record builders (also used by the integration and e2e modules) ------------------------------

def profile(pid: str, at: float, **kw: Any) -> Record:
    payload = {
        "provider_id": pid,
        "business_name": kw.pop("business_name", "DJ Bob"),
        "avatar_url": kw.pop("avatar_url", "https://cdn.example/b.jpg"),
        "category": kw.pop("category", "DJ"),
        "location": kw.pop("location", "Cape Town"),
        "hourly_rate_cents": kw.pop("hourly_rate_cents", 150000),
        "price_visible": kw.pop("price_visible", True),
        "custom_subtitle": kw.pop("custom_subtitle", None),
        "status": kw.pop("status", "active"),
        "updated_at": ts(at),
    }
    assert not kw, kw
    return record("provider.profile_updated", payload)


def booking(pid: str, bid: str, at: float = 0) -> Record:
    return record("booking.confirmed", {"provider_id": pid, "booking_id": bid, "confirmed_at": ts(at)})


def review(pid: str, rid: str, rating: int, at: float = 0) -> Record:
    payload = {"provider_id": pid, "review_id": rid, "rating": rating, "posted_at": ts(at)}
    return record("review.posted", payload)


def resent(rec: Record) -> Record:
    """The same business event under a new ``event_id`` (what dedupe by event_id cannot catch)."""
    return Record(rec.topic, rec.key, envelope(rec.value["type"], rec.value["payload"]))


def cards(records: list[Record]) -> dict[str, Any]:
    return {pid: render(s) for pid, s in fold_all(as_event(r) for r in records).items()}


def card(*records: Record):
    (only,) = cards(list(records)).values()
    return only


# -- tables --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("DJ", "dj", id="lowercased"),
        pytest.param(" dj ", "dj", id="trimmed"),
        pytest.param("Sound Service", "sound_service", id="space"),
        pytest.param("sound-service", "sound_service", id="hyphen"),
        pytest.param("Sound - Service", "sound_service", id="mixed-run"),
        pytest.param("Live  Band", "live_band", id="space-run"),
        pytest.param("A--B", "a_b", id="hyphen-run"),
        pytest.param("Sound\u00a0\tService", "sound_service", id="any-whitespace"),
        pytest.param("sound_service", "sound_service", id="already-normal"),
        pytest.param("Event Planner ", "event_planner", id="trailing-space"),
    ],
)
def test_normalize_category(raw, expected):
    assert normalize_category(raw) == expected


@pytest.mark.parametrize(
    ("ratings", "expected"),
    [
        pytest.param([], None, id="no-reviews-null"),
        pytest.param([5], 5.0, id="one"),
        pytest.param([5, 4, 5], 4.67, id="repeating-rounds"),
        pytest.param([5, 4, 4], 4.33, id="repeating-truncates"),
        pytest.param([5, 4], 4.5, id="exact"),
        pytest.param([1] * 7 + [2], 1.13, id="1.125-half-away-from-zero"),
        pytest.param([5] * 133 + [4] * 67, 4.67, id="4.665-half-away-not-float"),
    ],
)
def test_rating_avg_is_the_mean_rounded_half_away_from_zero(ratings, expected):
    assert rating_avg(sum(ratings), len(ratings)) == expected
    recs = [profile("p", 0)] + [review("p", f"r{i}", r, i) for i, r in enumerate(ratings)]
    assert card(*recs).item["rating_avg"] == expected


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        pytest.param({}, {"hourly_rate_cents": 150000, "price_visible": True}, id="price-shown"),
        pytest.param({"price_visible": False}, {"hourly_rate_cents": None, "price_visible": False}, id="price-hidden-null"),
        pytest.param({"hourly_rate_cents": None}, {"hourly_rate_cents": None}, id="no-rate"),
        pytest.param({"avatar_url": "data:image/png;base64,AAA"}, {"avatar_url": "/v1/img/avatar/p-1"}, id="data-avatar"),
        pytest.param({"avatar_url": None}, {"avatar_url": None}, id="no-avatar"),
        pytest.param({"category": " Sound - Service"}, {"category": " Sound - Service"}, id="raw-category-shown"),
        pytest.param({"business_name": None, "location": None, "custom_subtitle": "10 years"},
                     {"business_name": None, "location": None, "custom_subtitle": "10 years"}, id="nullable-fields"),
    ],
)
def test_card_item(kw, expected):
    item = card(profile("p-1", 5, **kw)).item
    assert {k: item[k] for k in expected} == expected
    assert list(item) == ["id", "business_name", "avatar_url", "category", "location", "hourly_rate_cents", "price_visible",
                          "custom_subtitle", "rating_avg", "rating_count", "book_count", "created_at", "updated_at"]


@pytest.mark.parametrize(
    ("status", "listed"),
    [pytest.param("active", True, id="active"), pytest.param("inactive", False, id="inactive"),
     pytest.param("suspended", False, id="suspended")],
)
def test_only_active_providers_are_listed(status, listed):
    assert card(profile("p", 0, status=status)).listed is listed


def test_a_stub_without_profile_is_not_rendered_but_keeps_its_counts():
    stub = [booking("p", "b1", 1), review("p", "r1", 4, 2)]
    assert card(*stub) is None
    later = card(*stub, profile("p", 10))
    assert (later.item["book_count"], later.item["rating_count"], later.item["rating_avg"]) == (1, 1, 4.0)


@pytest.mark.parametrize(
    "order",
    [pytest.param([0, 1, 2], id="time-order"), pytest.param([2, 1, 0], id="reversed"), pytest.param([1, 2, 0], id="latest-first")],
)
def test_latest_snapshot_wins_and_created_at_is_the_earliest(order):
    snaps = [profile("p", 10, category="DJ"), profile("p", 20, category="MC"), profile("p", 30, category="Photographer", status="inactive")]
    c = card(*(snaps[i] for i in order))
    assert c.item["category"] == "Photographer" and c.category_key == "photographer" and not c.listed
    assert c.item["created_at"] == as_event(snaps[0]).payload.updated_at
    assert c.item["updated_at"] == as_event(snaps[2]).payload.updated_at


def test_equal_updated_at_is_decided_by_value_not_arrival():
    a, b = profile("p", 10, category="DJ"), profile("p", 10, category="MC")
    assert card(a, b) == card(b, a)


@pytest.mark.parametrize(
    ("records", "books", "reviews", "avg"),
    [
        pytest.param([booking("p", "b1"), booking("p", "b1")], 1, 0, None, id="booking-once-per-booking-id"),
        pytest.param([booking("p", "b1"), booking("p", "b2")], 2, 0, None, id="two-bookings"),
        pytest.param([review("p", "r1", 5), review("p", "r1", 5)], 0, 1, 5.0, id="review-once-per-review-id"),
        pytest.param([review("p", "r1", 5, 1), review("p", "r1", 1, 9)], 0, 1, 5.0, id="same-review-id-earliest-counts"),
        pytest.param([review("p", "r1", 1, 9), review("p", "r1", 5, 1)], 0, 1, 5.0, id="same-review-id-earliest-even-if-later"),
    ],
)
def test_business_keys_count_once(records, books, reviews, avg):
    c = card(profile("p", 0), *records)
    assert (c.item["book_count"], c.item["rating_count"], c.item["rating_avg"]) == (books, reviews, avg)


def test_redelivered_event_is_idempotent():
    rec = booking("p", "b1")
    once = fold(ProviderState("p"), as_event(rec))
    assert fold(once, as_event(rec)) == once


def test_sort_keys_order_like_the_contract():
    def with_reviews(pid: str, ratings: list[int], books: int = 0, at: float = 0) -> list[Record]:
        return ([profile(pid, at)] + [review(pid, f"{pid}-r{i}", r) for i, r in enumerate(ratings)]
                + [booking(pid, f"{pid}-b{i}") for i in range(books)])

    got = cards(
        with_reviews("a", [5, 5, 4], books=3, at=1)  # 4.666…, rounds to 4.67
        + with_reviews("b", [5] * 67 + [4] * 33, books=1, at=2)  # 4.67 exactly: higher exact mean
        + with_reviews("c", [5], books=3, at=3)
        + with_reviews("d", [5, 5], at=3)  # same mean as c, more reviews first
        + with_reviews("e", [], books=9, at=0)  # no reviews: last in top_rated
    )
    assert got["a"].item["rating_avg"] == got["b"].item["rating_avg"] == 4.67

    def order(*key: str) -> list[str]:
        return sorted(got, key=lambda p: (*(getattr(got[p], k) for k in key), p))

    assert order("rated_key", "rated_count_key") == ["d", "c", "b", "a", "e"]
    assert order("booked_key") == ["e", "a", "c", "b", "d"]  # ties (a, c: 3) by id ascending
    assert order("newest_key") == ["c", "d", "b", "a", "e"]
    assert exact_mean(14, 3) < exact_mean(467, 100)
    assert got["e"].rated_key == Decimal(1) and got["e"].item["rating_avg"] is None


# -- properties ----------------------------------------------------------------------------------

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)

streams = st.builds(
    lambda seed, n: provider_stream(providers=n, seed=seed), st.integers(0, 10_000), st.integers(1, 6)
)


@SETTINGS
@given(streams, st.data())
def test_duplicates_apply_once(stream, data):
    noisy = list(stream)
    for i in data.draw(st.lists(st.sampled_from(range(len(stream))), max_size=len(stream))):
        rec = stream[i]
        # a producer retry (same event_id) or a second event for the same booking/review id
        copy = rec if data.draw(st.booleans()) or rec.value["type"] == "provider.profile_updated" else resent(rec)
        noisy.insert(data.draw(st.integers(i + 1, len(noisy))), copy)
    assert cards(dedupe(noisy)) == cards(stream)
    assert cards(noisy) == cards(stream)  # the fold alone also tolerates raw redelivery


@SETTINGS
@given(streams, st.randoms(use_true_random=False))
def test_any_arrival_order_projects_like_time_order(stream, rnd):
    # Bookings and reviews before the first snapshot, snapshots in any order.
    shuffled = list(stream)
    rnd.shuffle(shuffled)
    assert cards(shuffled) == cards(stream)


@SETTINGS
@given(streams, st.randoms(use_true_random=False))
def test_counts_and_reviews_before_the_profile_count_once_it_arrives(stream, rnd):
    profiles = [r for r in stream if r.value["type"] == "provider.profile_updated"]
    rest = [r for r in stream if r.value["type"] != "provider.profile_updated"]
    rnd.shuffle(rest)
    assert cards(rest + profiles) == cards(stream)


@SETTINGS
@given(streams, st.data())
def test_batches_that_load_only_the_ids_they_name_fold_like_one_pass(stream, data):
    """What the store does: per batch, counters plus the booking/review ids the batch names."""
    events = [as_event(r) for r in stream + [resent(r) for r in stream if r.value["type"] != "provider.profile_updated"]]
    random.Random(data.draw(st.integers(0, 1000))).shuffle(events)
    stored: dict[str, ProviderState] = {}
    i = 0
    while i < len(events):
        size = data.draw(st.integers(1, 40))
        batch, i = events[i : i + size], i + size
        named_b = {(e.payload.provider_id, e.payload.booking_id) for e in batch if isinstance(e.payload, BookingConfirmed)}
        named_r = {(e.payload.provider_id, e.payload.review_id) for e in batch if isinstance(e.payload, ReviewPosted)}
        work: dict[str, ProviderState] = {}
        for e in batch:
            pid = e.payload.provider_id
            if pid not in work:
                full = stored.get(pid, ProviderState(pid))
                work[pid] = ProviderState(
                    pid, full.profile, full.created_at, full.book_count, full.rating_sum, full.rating_count,
                    {b for b in full.bookings if (pid, b) in named_b},
                    {r: v for r, v in full.reviews.items() if (pid, r) in named_r},
                )
            fold_into(work[pid], e)
        for pid, st_ in work.items():
            full = stored.setdefault(pid, ProviderState(pid))
            full.profile, full.created_at = st_.profile, st_.created_at
            full.book_count, full.rating_sum, full.rating_count = st_.book_count, st_.rating_sum, st_.rating_count
            full.bookings |= st_.bookings
            full.reviews.update(st_.reviews)
    assert {p: render(s) for p, s in stored.items()} == cards(stream)
