"""Payments per thread, the cache scope ``apply`` bumps and the API's ETags name:
``payments:<thread_id>``, told to the thread's two participants on ``/v1/events``."""

from __future__ import annotations

from readside.readmodels.base import PARTICIPANTS, ScopeKind

__all__ = ["SCOPES", "thread_key"]

THREAD_PAYMENTS = ScopeKind("payments", PARTICIPANTS)
SCOPES = (THREAD_PAYMENTS,)


def thread_key(thread_id: str) -> str:
    return THREAD_PAYMENTS.scope(thread_id)
