"""Provider listing read model, the cache scopes: what ``apply`` bumps and the API's ETags name.

- ``providers``                 the listing of every category;
- ``providers:<category_key>``  one normalized category's listing.

Each is also the key of the listing's ``listing_versions`` and ``provider_counts`` rows. Public
listings are not streamed on ``/v1/events``: their responses are ``public, max-age=30`` anyway.
"""

from __future__ import annotations

from readside.readmodels.base import NOBODY, ScopeKind

__all__ = ["ALL_KEY", "SCOPES", "listing_key"]

LISTING = ScopeKind("providers", NOBODY, keyed=True, bare=True)
SCOPES = (LISTING,)
ALL_KEY = LISTING.scope()


def listing_key(category_key: str | None) -> str:
    """The version and counter key of a listing: all categories, or one normalized category."""
    return LISTING.scope(category_key)
