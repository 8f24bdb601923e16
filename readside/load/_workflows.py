"""Workflows: created, saved as versions of a growing graph (a few very large), some deleted."""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

from readside.load._world import Record, Sim, World, iso, simulate

__all__ = ["WorkflowSim", "workflow_stream"]

_WORKFLOW_NAMES = ("Onboarding", "Invoice approval", "Lead follow-up", "Booking confirmation",
                   "Weekly report", "Refund handling", "New hire checklist", "Event day run sheet")
_NODE_TYPES = ("trigger", "action", "condition", "delay", "webhook", "email")


def _graph(rng: random.Random, size: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    nodes = [{"id": f"n{i}", "type": "trigger" if i == 0 else rng.choice(_NODE_TYPES),
              "label": f"Step {i}", "position": {"x": 240 * (i % 6), "y": 160 * (i // 6)},
              "config": {"retries": rng.randint(0, 3), "timeout_s": rng.choice((30, 60, 300))}}
             for i in range(size)]
    edges = [{"id": f"e{i}", "source": f"n{rng.randrange(i)}", "target": f"n{i}"} for i in range(1, size)]
    return nodes, edges


class WorkflowSim(Sim):
    gap_scale = 4.0

    def __init__(self, world: World, versions: int) -> None:
        super().__init__(world)
        rng = self.rng
        self.id = world.next_id("w")
        self.remaining, self.version = versions, 0
        # a few very large graphs: version payloads can reach about a megabyte
        self.size = rng.randint(1500, 3000) if rng.random() < 0.02 else rng.randint(2, 20)

    def start(self, now: int) -> list[Record]:
        rng, t = self.rng, self.at(now)
        return [self.emit("workflow.created", {
            "workflow_id": self.id, "owner_id": self.w.user(1.5),
            "name": f"{rng.choice(_WORKFLOW_NAMES)} {rng.randint(1, 99)}",
            "is_template": rng.random() < 0.1, "created_at": iso(t)}, t)]

    def step(self, now: int) -> list[Record]:
        rng, t = self.rng, self.at(now)
        self.remaining -= 1
        self.done = self.remaining <= 0
        if self.done and rng.random() < 0.1:
            return [self.emit("workflow.deleted", {"workflow_id": self.id, "deleted_at": iso(t)}, t)]
        self.version += 1
        self.size += rng.randint(0, 4)
        nodes, edges = _graph(rng, self.size)
        return [self.emit("workflow.version_saved", {
            "workflow_id": self.id, "version_number": self.version, "nodes": nodes, "edges": edges,
            "saved_at": iso(t)}, t)]


def workflow_stream(*, workflows: int, versions: tuple[int, int] = (1, 8), users: int | None = None,
                    seed: int = 0, start: datetime | None = None) -> list[Record]:
    """Workflows on ``workflows.events``: ~10% templates, a few deleted, some very large."""
    low, high = versions
    world = World("workflows", seed, users or max(10, workflows // 2))
    return simulate(lambda: WorkflowSim(world, world.rng.randint(low, high)), workflows, world, start)

