"""What runs: the projector projects every read model in ``REGISTRY``, the API serves them,
``readside rebuild`` rebuilds them. A read model is registered by one line below.
"""

from __future__ import annotations

from dataclasses import replace

from readside.projector.projections.providers_store import PROJECTION as PROVIDERS
from readside.projector.projections.requests_store import PROJECTION as REQUESTS
from readside.projector.projections.threads_bulk import BULK as THREADS_BULK
from readside.projector.projections.threads_store import PROJECTION as THREADS
from readside.projector.projections.workflows_store import PROJECTION as WORKFLOWS
from readside.readmodels.base import Projection

__all__ = ["REGISTRY"]

REGISTRY: dict[str, Projection] = {
    p.name: p for p in (replace(THREADS, bulk=THREADS_BULK), PROVIDERS, WORKFLOWS, REQUESTS)
}
