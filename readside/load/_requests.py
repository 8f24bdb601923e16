"""Support-desk requests: created, updated, assigned, taken, discussed and read; some subtasks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from readside.load._text import TICKET_LINES, TICKET_TITLES, sentences
from readside.load._world import Record, Sim, World, iso, simulate

__all__ = ["RequestSim", "request_stream"]

_NEXT_STATUS = {"new": ("open", "in_progress"), "open": ("in_progress", "pending_requester", "solved"),
                "in_progress": ("pending_requester", "pending_subtask", "solved", "solved"),
                "pending_requester": ("in_progress", "solved"), "pending_subtask": ("in_progress",),
                "solved": ("closed", "closed", "closed", "open"), "closed": ()}
_PRIORITIES = ("low", "normal", "high", "urgent")


class RequestSim(Sim):
    gap_scale = 2.0

    def __init__(self, world: World, steps: int, technicians: int) -> None:
        super().__init__(world)
        rng = self.rng
        self.id = world.next_id("r")
        self.techs = [f"tech-{i}" for i in range(1, technicians + 1)]
        self.requester = world.user(1.2)
        self.parent = rng.choice(world.parents[-50:]) if world.parents and rng.random() < 0.15 else None
        if self.parent is None:
            world.parents.append(self.id)
        self.status, self.remaining = "new", steps
        self.assignees: set[str] = set()
        self.messages: list[tuple[int, str]] = []  # (created ms, sender id)
        self.marks: dict[str, int] = {}

    def start(self, now: int) -> list[Record]:
        rng, t = self.rng, self.at(now)
        title = rng.choice(TICKET_TITLES).format(n=rng.randint(1, 6))
        return [self.emit("request.created", {
            "request_id": self.id, "requester_id": self.requester,
            "business_unit_id": rng.randint(1, 5), "title": title,
            "priority": rng.choices(_PRIORITIES, weights=(20, 50, 20, 10))[0], "status": self.status,
            "parent_id": self.parent, "created_at": iso(t)}, t)]

    def step(self, now: int) -> list[Record]:
        rng = self.rng
        roll, t = rng.random(), self.at(now)
        p = {"request_id": self.id}
        if roll < 0.15 and not self.assignees:
            tech = rng.choice(self.techs)
            self.assignees.add(tech)
            out = self.emit("request.taken", {**p, "technician_id": tech, "taken_at": iso(t)}, t)
        elif roll < 0.22:
            self.assignees = set(rng.sample(self.techs, rng.choice((0, 1, 1, 1, 2))))
            out = self.emit("request.assigned", {**p, "assignee_ids": sorted(self.assignees),
                                                 "assigned_at": iso(t)}, t)
        elif roll < 0.50 or (roll >= 0.80 and not self.messages):
            out = self.emit("request.updated", {**p, "changes": self._changes(), "updated_at": iso(t)}, t)
        elif roll < 0.80:
            role, sender = self._someone()
            self.messages.append((t, sender))
            out = self.emit("request.message_created", {
                **p, "message_id": self.w.next_id("rm"), "sender_id": sender, "sender_role": role,
                "content": sentences(rng, TICKET_LINES), "created_at": iso(t)}, t)
        else:
            role, reader = self._someone()
            up_to = max(self.marks.get(reader, -1), self.messages[-1][0])
            self.marks[reader] = up_to
            out = self.emit("request.message_read", {**p, "reader_id": reader, "reader_role": role,
                                                     "read_up_to": iso(up_to), "read_at": iso(t)}, t)
        self.remaining -= 1
        self.done = self.remaining <= 0 or self.status == "closed"
        return [out]

    def _someone(self) -> tuple[str, str]:
        """(role, user id): the requester, or a technician — an assignee where there is one."""
        if self.rng.random() < 0.5:
            return "requester", self.requester
        return "technician", self.rng.choice(sorted(self.assignees) or self.techs)

    def _changes(self) -> dict[str, Any]:
        rng = self.rng
        changes: dict[str, Any] = {}
        if _NEXT_STATUS[self.status] and rng.random() < 0.75:
            self.status = changes["status"] = rng.choice(_NEXT_STATUS[self.status])
        if rng.random() < 0.15:
            changes["priority"] = rng.choice(_PRIORITIES)
        if rng.random() < 0.08:
            changes["title"] = rng.choice(TICKET_TITLES).format(n=rng.randint(1, 6)) + " (updated)"
        if rng.random() < 0.04:
            changes["business_unit_id"] = rng.randint(1, 5)
        if not changes:  # an empty patch is valid but rare in practice
            changes["priority"] = rng.choice(_PRIORITIES)
        return changes


def request_stream(*, requests: int, steps_per_request: tuple[int, int] = (2, 16),
                   technicians: int = 8, users: int | None = None, seed: int = 0,
                   start: datetime | None = None) -> list[Record]:
    """Support-desk requests on ``requests.events``; about 15% are subtasks of earlier requests."""
    low, high = steps_per_request
    world = World("requests", seed, users or max(10, requests // 2))
    return simulate(lambda: RequestSim(world, world.rng.randint(low, high), technicians), requests, world, start)

