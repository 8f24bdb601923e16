"""Service provider listings: profile snapshots, bookings and reviews."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from readside.load._text import BUSINESS, FIRST, LAST, PLACES, avatar
from readside.load._world import Record, Sim, World, iso, simulate

__all__ = ["ProviderSim", "provider_stream"]

_CATEGORIES = ("DJ", "Sound Service", "Photographer", "Live Band", "MC", "Videographer", "Caterer",
               "Lighting", "Event Planner")
_CATEGORY_VARIANTS = {"DJ": " dj ", "Sound Service": "sound-service", "Live Band": "Live  Band"}


class ProviderSim(Sim):
    gap_scale = 8.0

    def __init__(self, world: World) -> None:
        super().__init__(world)
        rng = self.rng
        self.id = world.next_id("p")
        first, last = rng.choice(FIRST), rng.choice(LAST)
        category = rng.choices(_CATEGORIES, weights=(25, 15, 20, 12, 8, 8, 5, 4, 3))[0]
        if category in _CATEGORY_VARIANTS and rng.random() < 0.05:  # raw display strings vary
            category = _CATEGORY_VARIANTS[category]
        self.profile: dict[str, Any] = {
            "provider_id": self.id,
            "business_name": None if rng.random() < 0.05 else rng.choice(BUSINESS).format(f=first, l=last),
            "avatar_url": avatar(rng, self.id), "category": category,
            "location": None if rng.random() < 0.1 else rng.choice(PLACES),
            "hourly_rate_cents": None if rng.random() < 0.1 else rng.randrange(30_000, 400_000, 500),
            "price_visible": rng.random() < 0.8,
            "custom_subtitle": None if rng.random() < 0.6
            else f"{rng.randint(2, 20)} years of {category.strip().lower()}",
            "status": rng.choices(("active", "inactive", "suspended"), weights=(90, 7, 3))[0]}
        self.remaining = 1 + int(60 * rng.random() ** 3)  # a few popular providers, a long tail
        self.bookings = self.reviews = 0

    def start(self, now: int) -> list[Record]:
        t = self.at(now)
        return [self.emit("provider.profile_updated", {**self.profile, "updated_at": iso(t)}, t)]

    def step(self, now: int) -> list[Record]:
        rng, roll = self.rng, self.rng.random()
        self.remaining -= 1
        self.done = self.remaining <= 0
        if roll < 0.1:
            if rng.random() < 0.5:
                self.profile["hourly_rate_cents"] = rng.randrange(30_000, 400_000, 500)
            if rng.random() < 0.3:
                self.profile["price_visible"] = not self.profile["price_visible"]
            if rng.random() < 0.15:
                self.profile["status"] = rng.choice(("active", "active", "inactive", "suspended"))
            return self.start(now)
        t = self.at(now)
        if roll < 0.65 or self.reviews >= self.bookings:
            self.bookings += 1
            return [self.emit("booking.confirmed", {"provider_id": self.id, "booking_id": self.w.next_id("b"),
                                                    "confirmed_at": iso(t)}, t)]
        self.reviews += 1
        return [self.emit("review.posted", {
            "provider_id": self.id, "review_id": self.w.next_id("rv"),
            "rating": rng.choices((1, 2, 3, 4, 5), weights=(3, 4, 10, 30, 53))[0], "posted_at": iso(t)}, t)]


def provider_stream(*, providers: int, seed: int = 0, start: datetime | None = None) -> list[Record]:
    """Provider listings on ``providers.events``: profile snapshots, bookings and reviews."""
    world = World("providers", seed, 2)
    return simulate(lambda: ProviderSim(world), providers, world, start)

