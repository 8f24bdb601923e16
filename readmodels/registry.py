"""What runs: the projector projects every read model in ``REGISTRY``, the API serves them,
``readside rebuild`` rebuilds them. A read model is registered by one line below.

``SCOPE_KINDS`` and ``route`` follow from it: the cache scopes every registered read model
declares (``Projection.scopes``), by name, for whoever parses a scope (``/v1/events``' hub).
"""

from __future__ import annotations

from dataclasses import replace

from readside.readmodels.base import Projection, ScopeKind
from readside.readmodels.payments.store import PROJECTION as PAYMENTS
from readside.readmodels.providers.store import PROJECTION as PROVIDERS
from readside.readmodels.requests.store import PROJECTION as REQUESTS
from readside.readmodels.threads.bulk import BULK as THREADS_BULK
from readside.readmodels.threads.store import PROJECTION as THREADS
from readside.readmodels.workflows.store import PROJECTION as WORKFLOWS

__all__ = ["REGISTRY", "SCOPE_KINDS", "route"]

REGISTRY: dict[str, Projection] = {
    p.name: p for p in (replace(THREADS, bulk=THREADS_BULK), PROVIDERS, WORKFLOWS, REQUESTS, PAYMENTS)
}


def _scope_kinds() -> dict[str, ScopeKind]:
    kinds: dict[str, ScopeKind] = {}
    for projection in REGISTRY.values():
        for kind in projection.scopes:
            if kind.name in kinds:
                raise ValueError(f"cache scope {kind.name!r} is declared twice (read model {projection.name!r})")
            kinds[kind.name] = kind
    return kinds


SCOPE_KINDS: dict[str, ScopeKind] = _scope_kinds()


def route(scope: str) -> tuple[ScopeKind, str | None] | None:
    """The declared kind of ``scope`` and its key (None: a bare scope); None for a scope that no
    registered read model declares, or not in a declared form."""
    kind = SCOPE_KINDS.get(scope.partition(":")[0])
    if kind is None:
        return None
    matches, key = kind.parse(scope)
    return (kind, key) if matches else None
