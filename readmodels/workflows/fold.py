"""Workflow summary read model, the pure core: fold events into a workflow's summary, render it.

``WorkflowState`` keeps what the lists show and nothing of the graph: the creation facts, the
latest version's number with its node and edge counts (``len`` of the arrays — the arrays
themselves are never stored), the latest ``saved_at`` and a sticky ``deleted`` flag.

Merges, so arrival order does not matter where the contract leaves room:
- ``workflow.created``: the earliest ``created_at`` wins (ties by value) — "first" in time order;
- ``workflow.version_saved``: ``latest`` is the highest ``version_number`` (ties by
  ``saved_at``, then counts); ``last_saved_at`` the maximum ``saved_at``; a version saved before
  the workflow's ``created`` is kept on a stub until ``created`` arrives;
- ``workflow.deleted`` is sticky: once seen, every later event is ignored, and a deleted
  workflow is never listed, so whatever arrived before or after it, the lists are the same.

``updated_at`` is the latest ``saved_at``, or ``created_at`` with no saved version. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from readside.schemas import Event, WorkflowCreated, WorkflowDeleted, WorkflowVersionSaved

__all__ = ["Created", "Latest", "WorkflowRow", "WorkflowState", "fold", "fold_all", "fold_into", "render"]


@dataclass(frozen=True, slots=True, order=True)
class Created:
    created_at: datetime
    owner_id: str
    name: str
    is_template: bool


@dataclass(frozen=True, slots=True, order=True)
class Latest:
    version_number: int
    saved_at: datetime
    node_count: int
    edge_count: int


@dataclass
class WorkflowState:
    workflow_id: str
    created: Created | None = None
    latest: Latest | None = None
    last_saved_at: datetime | None = None
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class WorkflowRow:
    """A workflow's list entry: who sees it, where it sorts, and the item as served."""

    workflow_id: str
    owner_id: str
    is_template: bool
    listed: bool
    updated_at: datetime
    item: dict[str, Any]


def fold_into(state: WorkflowState, event: Event) -> None:
    """Apply one event to ``state`` in place (the batch owns its working copy)."""
    if state.deleted:
        return  # events after workflow.deleted are ignored
    p = event.payload
    if isinstance(p, WorkflowCreated):
        created = Created(p.created_at, p.owner_id, p.name, p.is_template)
        if state.created is None or created < state.created:
            state.created = created
    elif isinstance(p, WorkflowVersionSaved):
        latest = Latest(p.version_number, p.saved_at, len(p.nodes), len(p.edges))
        if state.latest is None or latest > state.latest:
            state.latest = latest
        if state.last_saved_at is None or p.saved_at > state.last_saved_at:
            state.last_saved_at = p.saved_at
    elif isinstance(p, WorkflowDeleted):
        state.deleted = True


def fold(state: WorkflowState, event: Event) -> WorkflowState:
    """Pure: the state after ``event``."""
    new = replace(state)
    fold_into(new, event)
    return new


def fold_all(events: Iterable[Event], states: dict[str, WorkflowState] | None = None) -> dict[str, WorkflowState]:
    """Fold a stream into per-workflow states (the reference the tests compare tables with)."""
    states = {} if states is None else states
    for event in events:
        wid = event.payload.workflow_id  # type: ignore[attr-defined]
        fold_into(states.setdefault(wid, WorkflowState(wid)), event)
    return states


def render(state: WorkflowState) -> WorkflowRow | None:
    """The list entry; None while ``workflow.created`` is unknown (a stub is never listed)."""
    c = state.created
    if c is None:
        return None
    latest = state.latest
    updated_at = state.last_saved_at if state.last_saved_at is not None else c.created_at
    item = {
        "id": state.workflow_id,
        "name": c.name,
        "latest_version": latest.version_number if latest else None,
        "node_count": latest.node_count if latest else 0,
        "edge_count": latest.edge_count if latest else 0,
        "is_template": c.is_template,
        "created_at": c.created_at,
        "updated_at": updated_at,
    }
    return WorkflowRow(state.workflow_id, c.owner_id, c.is_template, not state.deleted, updated_at, item)
