"""Support-desk requests read model, the cache scopes: what ``apply`` bumps and the API's ETags name.

- ``requests:<scope>``  the technician views of one counter scope (``views.counter_scopes``: ``*``
                        for all business units, or one business unit's id), versioned by
                        ``request_versions``: told to every viewer with the role ``technician``.
"""

from __future__ import annotations

from readside.readmodels.base import ScopeKind, role
from readside.readmodels.requests.views import ALL_SCOPE

__all__ = ["SCOPES", "requests", "version_key"]

REQUESTS = ScopeKind("requests", role("technician"))
SCOPES = (REQUESTS,)


def requests(counter_scope: str) -> str:
    """The cache scope of one counter scope (``*`` or a business unit id)."""
    return REQUESTS.scope(counter_scope)


def version_key(business_unit_id: int | None) -> str:
    """The cache scope bumped after a commit that changed requests of that business unit (or any)."""
    return requests(ALL_SCOPE if business_unit_id is None else str(business_unit_id))
