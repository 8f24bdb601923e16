"""Payloads of topic ``workflows.events`` (record key: ``workflow_id``).

A saved version carries the whole graph and can reach 1 MB; nodes and edges are opaque JSON
values here (the read model keeps only their counts), so their items are not validated.
"""

from __future__ import annotations

from typing import Any

from readside.schemas._base import Id, Payload, Timestamp

__all__ = ["WorkflowCreated", "WorkflowDeleted", "WorkflowVersionSaved"]


class WorkflowCreated(Payload):
    workflow_id: Id
    owner_id: Id
    name: str
    is_template: bool
    created_at: Timestamp


class WorkflowVersionSaved(Payload):
    """``workflow.version_saved``: ``nodes`` and ``edges`` must be JSON arrays of anything."""

    workflow_id: Id
    version_number: int
    nodes: list[Any]
    edges: list[Any]
    saved_at: Timestamp


class WorkflowDeleted(Payload):
    """``workflow.deleted``: later events on the workflow are ignored by readers."""

    workflow_id: Id
    deleted_at: Timestamp
