"""Support-desk requests read model, the pure core: fold events into a request's state, render
its technician-view row (which views it is in: ``views``).

``RequestState`` is what the read model knows of one request. Every part merges commutatively,
so any order of a request's events (and any redelivery) folds to the state of time order:

- the first ``request.created`` wins (a second one is ignored, as for ``thread.started``);
- ``priority``, ``title`` and ``business_unit_id`` are registers ``(time, rank, value)`` that keep
  the largest: the latest time wins; at equal times an update (rank 1) beats the create (rank 0),
  and between two updates the larger value (code point / numeric order) — arbitrary but fixed;
- ``status`` is a small log of ``(time, rank, status)`` entries compacted to the last non-solved
  entry and the solved ones after it: the status is the largest entry, and ``solved_at`` is the
  time of the first entry of the trailing run of ``solved`` (so a no-op ``solved`` → ``solved``
  update keeps the original ``solved_at``; a request created as solved is solved at
  ``created_at``; moving away clears it). Entries older than the last non-solved one can never
  matter again, whatever arrives later, which is why the compaction is safe;
- assignees: ``request.assigned`` is a register ``(assigned_at, sorted ids)`` (tie: the larger
  tuple); ``request.taken`` keeps, per technician, the latest ``taken_at``. The assignees are the
  latest assigned set plus the technicians whose take is strictly later than it (a take at the
  very instant of an assignment is taken to be replaced by it). Takes not later than the
  assignment are dropped: the assignment time only grows, so they can never count again;
- ``updated_at`` is ``max(created_at, latest update/assign/take/message time)``; reads do not
  count, a no-op update or take does;
- the last message is the maximum by ``(created_at, message_id)``; the latest technician and
  requester message times are maxima; a read marker keeps the greatest ``read_up_to`` (ties: the
  later ``read_at``), whatever the arrival order or ``read_at`` — a stale client re-sending an old
  position never moves it back — one for ``reader_role`` requester, one for the furthest of any
  technician's.

No I/O here: the same code serves live projection, rebuild, tests and the bench. ``dump_state`` /
``load_state`` give the compact bytes the store keeps per request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from readside.readmodels.threads.fold import normalize_text
from readside.readmodels.threads.rules import further
from readside.schemas import (
    Event,
    RequestAssigned,
    RequestCreated,
    RequestMessageCreated,
    RequestMessageRead,
    RequestTaken,
    RequestUpdated,
)

__all__ = [
    "Created",
    "RequestRow",
    "RequestState",
    "assignees",
    "dump_state",
    "fold",
    "fold_all",
    "fold_into",
    "load_state",
    "render",
]
SOLVED = "solved"
CLOSED = "closed"
HIGH = ("urgent", "high")

Register = tuple[datetime, int, Any]  # (time, rank: 0 created / 1 updated, value)
Marker = tuple[datetime, datetime]  # (read_at, read_up_to)
LastMessage = tuple[datetime, str, str, str]  # (created_at, message_id, sender_role, normalized content)


@dataclass(frozen=True, slots=True)
class Created:
    requester_id: str
    parent_id: str | None
    created_at: datetime


@dataclass
class RequestState:
    request_id: str
    created: Created | None = None
    status_log: tuple[Register, ...] = ()
    priority: Register | None = None
    title: Register | None = None
    business_unit: Register | None = None
    assigned: tuple[datetime, tuple[str, ...]] | None = None
    takes: dict[str, datetime] = field(default_factory=dict)
    last_event_at: datetime | None = None
    last_message: LastMessage | None = None
    technician_message_at: datetime | None = None
    requester_message_at: datetime | None = None
    requester_read: Marker | None = None
    technician_read: Marker | None = None

    def copy(self) -> RequestState:
        return replace(self, takes=dict(self.takes))


def _later(current: Any, candidate: Any) -> Any:
    return candidate if current is None or candidate > current else current


def _add_status(log: tuple[Register, ...], entry: Register) -> tuple[Register, ...]:
    entries = sorted(set(log) | {entry})
    last_open = max((i for i, e in enumerate(entries) if e[2] != SOLVED), default=0)
    return tuple(entries[last_open:])


def _prune_takes(state: RequestState) -> None:
    if state.assigned is not None:
        cut = state.assigned[0]
        for tech in [t for t, at in state.takes.items() if at <= cut]:
            del state.takes[tech]


def fold_into(state: RequestState, event: Event) -> None:
    """Apply one event to ``state`` in place (the batch owns its working copy)."""
    p = event.payload
    if isinstance(p, RequestCreated):
        if state.created is not None:
            return  # a second create: first wins
        at = p.created_at
        state.created = Created(p.requester_id, p.parent_id, at)
        state.status_log = _add_status(state.status_log, (at, 0, p.status))
        state.priority = _later(state.priority, (at, 0, p.priority))
        state.title = _later(state.title, (at, 0, p.title))
        state.business_unit = _later(state.business_unit, (at, 0, p.business_unit_id))
    elif isinstance(p, RequestUpdated):
        at, changes = p.updated_at, p.changes
        if changes.status is not None:
            state.status_log = _add_status(state.status_log, (at, 1, changes.status))
        if changes.priority is not None:
            state.priority = _later(state.priority, (at, 1, changes.priority))
        if changes.title is not None:
            state.title = _later(state.title, (at, 1, changes.title))
        if changes.business_unit_id is not None:
            state.business_unit = _later(state.business_unit, (at, 1, changes.business_unit_id))
        state.last_event_at = _later(state.last_event_at, at)
    elif isinstance(p, RequestAssigned):
        state.assigned = _later(state.assigned, (p.assigned_at, tuple(sorted(set(p.assignee_ids)))))
        _prune_takes(state)
        state.last_event_at = _later(state.last_event_at, p.assigned_at)
    elif isinstance(p, RequestTaken):
        if state.assigned is None or p.taken_at > state.assigned[0]:
            state.takes[p.technician_id] = _later(state.takes.get(p.technician_id), p.taken_at)
        state.last_event_at = _later(state.last_event_at, p.taken_at)
    elif isinstance(p, RequestMessageCreated):
        at = p.created_at
        state.last_message = _later(state.last_message, (at, p.message_id, p.sender_role, normalize_text(p.content)))
        if p.sender_role == "technician":
            state.technician_message_at = _later(state.technician_message_at, at)
        else:
            state.requester_message_at = _later(state.requester_message_at, at)
        state.last_event_at = _later(state.last_event_at, at)
    elif isinstance(p, RequestMessageRead):
        marker = (p.read_at, p.read_up_to)
        if p.reader_role == "requester":
            state.requester_read = further(state.requester_read, marker)
        else:
            state.technician_read = further(state.technician_read, marker)


def fold(state: RequestState, event: Event) -> RequestState:
    """Pure: the state after ``event``."""
    new = state.copy()
    fold_into(new, event)
    return new


def fold_all(events: Iterable[Event], states: dict[str, RequestState] | None = None) -> dict[str, RequestState]:
    """Fold a stream into per-request states (the reference the tests compare tables with)."""
    states = {} if states is None else states
    for event in events:
        rid = event.payload.request_id  # type: ignore[attr-defined]
        fold_into(states.setdefault(rid, RequestState(rid)), event)
    return states


# -- rendering -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RequestRow:
    """One request as the technician views see it; ``listed`` once ``request.created`` is known."""

    request_id: str
    listed: bool
    status: str | None = None
    priority: str | None = None
    business_unit_id: int | None = None
    is_subtask: bool = False
    assignees: tuple[str, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None
    solved_at: datetime | None = None
    item: dict[str, Any] | None = None

    @property
    def unsolved(self) -> bool:
        return self.listed and self.status not in (SOLVED, CLOSED)

    @property
    def unassigned(self) -> bool:
        return not self.assignees

    @property
    def urgent_high(self) -> bool:
        return self.priority in HIGH


def _status_and_solved_at(log: tuple[Register, ...]) -> tuple[str | None, datetime | None]:
    if not log:
        return None, None
    status = log[-1][2]
    if status != SOLVED:
        return status, None
    run = len(log) - 1
    while run > 0 and log[run - 1][2] == SOLVED:
        run -= 1
    return status, log[run][0]


def assignees(state: RequestState) -> tuple[str, ...]:
    base = set(state.assigned[1]) if state.assigned else set()
    cut = state.assigned[0] if state.assigned else None
    return tuple(sorted(base | {t for t, at in state.takes.items() if cut is None or at > cut}))


def render(state: RequestState) -> RequestRow:
    """The request's row and ready item (CONTRACT §2 ``data`` entry); unlisted before its create."""
    c = state.created
    if c is None:
        return RequestRow(state.request_id, False)
    status, solved_at = _status_and_solved_at(state.status_log)
    updated_at = c.created_at if state.last_event_at is None else max(c.created_at, state.last_event_at)
    who = assignees(state)
    priority = state.priority[2] if state.priority else None
    bu = state.business_unit[2] if state.business_unit else None
    tech_at, req_at = state.technician_message_at, state.requester_message_at
    rr, tr = state.requester_read, state.technician_read
    last = state.last_message
    item = {
        "id": state.request_id,
        "title": state.title[2] if state.title else None,
        "status": status,
        "priority": priority,
        "business_unit_id": bu,
        "requester_id": c.requester_id,
        "assignee_ids": list(who),
        "parent_id": c.parent_id,
        "is_subtask": c.parent_id is not None,
        "created_at": c.created_at,
        "updated_at": updated_at,
        "solved_at": solved_at,
        "last_message": {"content": last[3], "sender_role": last[2], "created_at": last[0]} if last else None,
        "requester_unread": tech_at is not None and (rr is None or tech_at > rr[1]),
        "technician_unread": req_at is not None and (tr is None or req_at > tr[1]),
    }
    return RequestRow(
        state.request_id, True, status, priority, bu, c.parent_id is not None, who,
        c.created_at, updated_at, solved_at, item,
    )


# -- storage form ----------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(at: datetime | None) -> int | None:
    return None if at is None else (at - _EPOCH) // timedelta(microseconds=1)


def _at(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def _reg_out(reg: Register | None) -> list[Any] | None:
    return None if reg is None else [_us(reg[0]), reg[1], reg[2]]


def _reg_in(raw: list[Any] | None) -> Register | None:
    return None if raw is None else (_at(raw[0]), raw[1], raw[2])  # type: ignore[return-value]


def _marker_out(m: Marker | None) -> list[Any] | None:
    return None if m is None else [_us(m[0]), _us(m[1])]


def _marker_in(raw: list[Any] | None) -> Marker | None:
    return None if raw is None else (_at(raw[0]), _at(raw[1]))  # type: ignore[return-value]


def dump_state(state: RequestState) -> bytes:
    """The state as compact JSON bytes (times as integer microseconds): exact and deterministic."""
    c, a, m = state.created, state.assigned, state.last_message
    return orjson.dumps(
        {
            "c": None if c is None else [c.requester_id, c.parent_id, _us(c.created_at)],
            "s": [_reg_out(e) for e in state.status_log],
            "p": _reg_out(state.priority),
            "t": _reg_out(state.title),
            "b": _reg_out(state.business_unit),
            "a": None if a is None else [_us(a[0]), list(a[1])],
            "k": {tech: _us(at) for tech, at in sorted(state.takes.items())},
            "e": _us(state.last_event_at),
            "m": None if m is None else [_us(m[0]), m[1], m[2], m[3]],
            "mt": _us(state.technician_message_at),
            "mr": _us(state.requester_message_at),
            "rr": _marker_out(state.requester_read),
            "rt": _marker_out(state.technician_read),
        }
    )


def load_state(request_id: str, raw: bytes) -> RequestState:
    d = orjson.loads(raw)
    c, a, m = d["c"], d["a"], d["m"]
    return RequestState(
        request_id,
        created=None if c is None else Created(c[0], c[1], _at(c[2])),  # type: ignore[arg-type]
        status_log=tuple(_reg_in(e) for e in d["s"]),  # type: ignore[misc]
        priority=_reg_in(d["p"]),
        title=_reg_in(d["t"]),
        business_unit=_reg_in(d["b"]),
        assigned=None if a is None else (_at(a[0]), tuple(a[1])),  # type: ignore[arg-type]
        takes={tech: _at(us) for tech, us in d["k"].items()},  # type: ignore[misc]
        last_event_at=_at(d["e"]),
        last_message=None if m is None else (_at(m[0]), m[1], m[2], m[3]),  # type: ignore[arg-type]
        technician_message_at=_at(d["mt"]),
        requester_message_at=_at(d["mr"]),
        requester_read=_marker_in(d["rr"]),
        technician_read=_marker_in(d["rt"]),
    )
