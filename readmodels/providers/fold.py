"""Provider listing read model, the pure core: fold events into a provider's state, render its card.

``ProviderState`` is what the read model knows of one provider listing: its latest profile
snapshot, the first snapshot's time, and its bookings and reviews. Every part merges
commutatively, so any arrival order folds to the state of time order:

- the profile is a register: the snapshot with the latest ``updated_at`` holds, ties broken by
  the snapshot's value (its canonical JSON), never by arrival;
- ``created_at`` is the minimum ``updated_at`` over every snapshot seen ("the first profile
  event" in time order);
- bookings are a set of ``booking_id`` (each counts once, whatever the ``event_id``);
- reviews are a map ``review_id -> (posted_at, rating)``; a second review with a known id
  replaces the first only if it is earlier by ``(posted_at, rating)``, i.e. the review that comes
  first in time order counts, whichever arrives first;
- a booking or review before the first snapshot is kept (a stub without profile), and counts
  once the profile arrives.

For the store, ``bookings`` and ``reviews`` need only hold the ids the batch names (plus the
running counters): the fold checks membership of the ids it sees, never the whole set.

``render`` gives the card (the list item as it is served) and the sort keys of the three
orders; only ``active`` providers with a profile are listed. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

from readside.readmodels.avatars.fold import shipped
from readside.schemas import BookingConfirmed, Event, ProviderProfileUpdated, ReviewPosted
from readside.shared.jsonbytes import dumps

__all__ = [
    "FIELDS",
    "Card",
    "Profile",
    "ProviderState",
    "exact_mean",
    "fold",
    "fold_all",
    "fold_into",
    "normalize_category",
    "rating_avg",
    "render",
]

# The item's fields, in the order they are served (CONTRACT §2 `GET /v1/providers`).
FIELDS = (
    "id",
    "business_name",
    "avatar_url",
    "category",
    "location",
    "hourly_rate_cents",
    "price_visible",
    "custom_subtitle",
    "rating_avg",
    "rating_count",
    "book_count",
    "created_at",
    "updated_at",
)
LISTED_STATUS = "active"
_RUNS = re.compile(r"[\s\-]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# 34 significant digits: two means of reviews with fewer than 10^15 ratings each that differ,
# differ by more than 10^-30, so this rounding keeps their order; equal means give equal values.
_MEAN = Context(prec=34)
_CENT = Decimal("0.01")
NO_REVIEWS_KEY = Decimal(1)  # rated_key is -mean (<= -1 with reviews): providers without come last


def normalize_category(raw: str) -> str:
    """Trimmed, lower-cased, every run of whitespace and hyphens one ``_``: ``"Sound - Service"``
    → ``"sound_service"``. The same function normalizes profiles and the query parameter."""
    return _RUNS.sub("_", raw.strip().lower())


@dataclass(frozen=True, slots=True)
class Profile:
    business_name: str | None
    avatar_url: str | None
    category: str
    location: str | None
    hourly_rate_cents: int | None
    price_visible: bool
    custom_subtitle: str | None
    status: str
    updated_at: datetime

    def rank(self) -> tuple[datetime, bytes]:
        """Latest ``updated_at`` wins; equal times are ordered by the snapshot's value."""
        return self.updated_at, dumps(
            [
                self.business_name,
                self.avatar_url,
                self.category,
                self.location,
                self.hourly_rate_cents,
                self.price_visible,
                self.custom_subtitle,
                self.status,
            ]
        )


@dataclass
class ProviderState:
    provider_id: str
    profile: Profile | None = None
    created_at: datetime | None = None
    book_count: int = 0
    rating_sum: int = 0
    rating_count: int = 0
    bookings: set[str] = field(default_factory=set)
    reviews: dict[str, tuple[datetime, int]] = field(default_factory=dict)

    def copy(self) -> ProviderState:
        return ProviderState(
            self.provider_id,
            self.profile,
            self.created_at,
            self.book_count,
            self.rating_sum,
            self.rating_count,
            set(self.bookings),
            dict(self.reviews),
        )


@dataclass(frozen=True, slots=True)
class Card:
    """A provider's row in the listing: the item, where it is listed, and its sort keys.

    Sort keys are ascending-only so each order is one plain index and one row comparison:
    ``booked_key = -book_count``, ``newest_key = -(µs since epoch of created_at)``,
    ``rated_key = -exact mean`` (``+1`` without reviews, so those come last) and
    ``rated_count_key = -rating_count``; ties by ``provider_id`` ascending.
    """

    provider_id: str
    listed: bool
    category_key: str
    booked_key: int
    newest_key: int
    rated_key: Decimal
    rated_count_key: int
    item: dict[str, Any]


def exact_mean(rating_sum: int, rating_count: int) -> Decimal | None:
    if rating_count == 0:
        return None
    return _MEAN.divide(Decimal(rating_sum), Decimal(rating_count))


def rating_avg(rating_sum: int, rating_count: int) -> float | None:
    """The mean rounded half away from zero to 2 decimals (ratings are positive: HALF_UP)."""
    if rating_count == 0:
        return None
    mean = Decimal(rating_sum) / Decimal(rating_count)  # 28 digits: plenty to round at 0.01
    return float(mean.quantize(_CENT, rounding=ROUND_HALF_UP))


def fold_into(state: ProviderState, event: Event) -> None:
    """Apply one event to ``state`` in place (the batch owns its working copy)."""
    p = event.payload
    if isinstance(p, ProviderProfileUpdated):
        snapshot = Profile(
            p.business_name,
            p.avatar_url,
            p.category,
            p.location,
            p.hourly_rate_cents,
            p.price_visible,
            p.custom_subtitle,
            p.status,
            p.updated_at,
        )
        if state.profile is None or snapshot.rank() > state.profile.rank():
            state.profile = snapshot
        if state.created_at is None or p.updated_at < state.created_at:
            state.created_at = p.updated_at
    elif isinstance(p, BookingConfirmed):
        if p.booking_id not in state.bookings:
            state.bookings.add(p.booking_id)
            state.book_count += 1
    elif isinstance(p, ReviewPosted):
        new = (p.posted_at, p.rating)
        known = state.reviews.get(p.review_id)
        if known is None:
            state.rating_sum += p.rating
            state.rating_count += 1
            state.reviews[p.review_id] = new
        elif new < known:
            state.rating_sum += p.rating - known[1]
            state.reviews[p.review_id] = new


def fold(state: ProviderState, event: Event) -> ProviderState:
    """Pure: the state after ``event``."""
    new = state.copy()
    fold_into(new, event)
    return new


def fold_all(events: Iterable[Event], states: dict[str, ProviderState] | None = None) -> dict[str, ProviderState]:
    """Fold a stream into per-provider states (the reference the tests compare tables with)."""
    states = {} if states is None else states
    for event in events:
        pid = event.payload.provider_id  # type: ignore[attr-defined]
        fold_into(states.setdefault(pid, ProviderState(pid)), event)
    return states


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def render(state: ProviderState) -> Card | None:
    """The provider's card; None for a stub without a profile (never listed)."""
    prof = state.profile
    if prof is None or state.created_at is None:
        return None
    mean = exact_mean(state.rating_sum, state.rating_count)
    item = {
        "id": state.provider_id,
        "business_name": prof.business_name,
        "avatar_url": shipped(prof.avatar_url, state.provider_id),
        "category": prof.category,
        "location": prof.location,
        "hourly_rate_cents": prof.hourly_rate_cents if prof.price_visible else None,
        "price_visible": prof.price_visible,
        "custom_subtitle": prof.custom_subtitle,
        "rating_avg": rating_avg(state.rating_sum, state.rating_count),
        "rating_count": state.rating_count,
        "book_count": state.book_count,
        "created_at": state.created_at,
        "updated_at": prof.updated_at,
    }
    return Card(
        provider_id=state.provider_id,
        listed=prof.status == LISTED_STATUS,
        category_key=normalize_category(prof.category),
        booked_key=-state.book_count,
        newest_key=-_micros(state.created_at),
        rated_key=mean.copy_negate() if mean is not None else NO_REVIEWS_KEY,
        rated_count_key=-state.rating_count,
        item=item,
    )
