"""Payloads of topic ``providers.events`` (record key: ``provider_id``).

``provider_id`` names a listing; it is unrelated to the user ids of thread participants.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from readside.schemas._base import Id, Payload, Timestamp

__all__ = ["BookingConfirmed", "ProviderProfileUpdated", "ReviewPosted"]

ProviderStatus = Literal["active", "inactive", "suspended"]


class ProviderProfileUpdated(Payload):
    """``provider.profile_updated``: a full snapshot of the profile, not a patch.

    The snapshot with the latest ``updated_at`` holds. ``category`` is the raw display string;
    readers normalize it for matching. Nullable: ``business_name``, ``avatar_url``,
    ``location``, ``hourly_rate_cents``, ``custom_subtitle``.
    """

    provider_id: Id
    business_name: str | None
    avatar_url: str | None
    category: str
    location: str | None
    hourly_rate_cents: int | None
    price_visible: bool
    custom_subtitle: str | None
    status: ProviderStatus
    updated_at: Timestamp


class BookingConfirmed(Payload):
    """``booking.confirmed``: counts once per ``booking_id``."""

    provider_id: Id
    booking_id: Id
    confirmed_at: Timestamp


class ReviewPosted(Payload):
    """``review.posted``: counts once per ``review_id``; ``rating`` is an integer 1..5."""

    provider_id: Id
    review_id: Id
    rating: Annotated[int, Field(ge=1, le=5)]
    posted_at: Timestamp
