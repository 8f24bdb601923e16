"""What runs: the projector projects every read model in ``REGISTRY``, the API serves them,
``readside rebuild`` rebuilds them. A read model is registered by one line below.
"""

from __future__ import annotations

from dataclasses import replace

from readside.readmodels.providers.store import PROJECTION as PROVIDERS
from readside.readmodels.requests.store import PROJECTION as REQUESTS
from readside.readmodels.threads.bulk import BULK as THREADS_BULK
from readside.readmodels.threads.store import PROJECTION as THREADS
from readside.readmodels.workflows.store import PROJECTION as WORKFLOWS
from readside.readmodels.base import Projection

__all__ = ["REGISTRY"]

REGISTRY: dict[str, Projection] = {
    p.name: p for p in (replace(THREADS, bulk=THREADS_BULK), PROVIDERS, WORKFLOWS, REQUESTS)
}
