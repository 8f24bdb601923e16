"""The API as ``readside api`` serves it: the composition root hands the API what it reads of
the engine — the read models' registry and the projection status collector — so that no module
of ``readside.api`` imports the projector.

``app_from_env`` is the factory for ASGI servers (``uvicorn --factory readside.serve:app_from_env``).
"""

from __future__ import annotations

import gc
import os

from starlette.applications import Starlette

from readside.api import app as api
from readside.projector.status import collect
from readside.readmodels.registry import REGISTRY
from readside.shared import logs
from readside.shared.settings import Settings

__all__ = ["app_from_env", "create_app"]


def create_app(settings: Settings) -> Starlette:
    """The query API with this version's read models and status collector."""
    return api.create_app(settings, registry=REGISTRY, status=collect)


def app_from_env() -> Starlette:
    """Configures logging from the environment too: a worker of ``readside api --workers N`` is a
    process of its own."""
    logs.configure(os.environ)
    app = create_app(Settings.from_env())
    # What the process holds once started (modules, the app) stays: out of the collector's sight
    # (gc.freeze), a full collection scans only what requests create. Without it, a full
    # collection of the ~80k startup objects paused the worker ~60 ms, the p99 of cached reads.
    gc.collect()
    gc.freeze()
    return app
