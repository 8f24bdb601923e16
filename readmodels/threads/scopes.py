"""Thread read models, the cache scopes: what ``apply`` bumps and the API's ETags name.

- ``viewer:<user_id>``   one viewer's inbox and summary (``viewer_versions``): told to that viewer;
- ``thread:<thread_id>`` one thread's history (``threads.version``): told to its two participants.
"""

from __future__ import annotations

from readside.readmodels.base import OWNER, PARTICIPANTS, ScopeKind

__all__ = ["SCOPES", "thread", "viewer"]

VIEWER = ScopeKind("viewer", OWNER)
THREAD = ScopeKind("thread", PARTICIPANTS)
SCOPES = (VIEWER, THREAD)


def viewer(user_id: str) -> str:
    return VIEWER.scope(user_id)


def thread(thread_id: str) -> str:
    return THREAD.scope(thread_id)
