"""The read models. Each module is a pure fold plus its storage; ``REGISTRY`` is what runs."""

from __future__ import annotations

from projector.projection import Projection
from projector.projections.threads_store import PROJECTION as THREADS

__all__ = ["REGISTRY"]

REGISTRY: dict[str, Projection] = {p.name: p for p in (THREADS,)}
