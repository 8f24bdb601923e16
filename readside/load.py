"""The synthetic event generator behind ``readside load``: realistic contract events (CONTRACT §1).

Each aggregate (a thread, a request, a provider listing, a workflow) is a small simulation with
``start(now)`` and ``step(now)``; both return the records of what happened at ``now`` (never
earlier than the aggregate's previous event, so its times strictly increase). The same
simulations serve two drivers:

- the batch streams (``thread_stream`` …, ``mixed_stream``): deterministic for a seed — event ids
  included — with times from ``start`` (default 2026-11-01T08:00Z) spread over two weeks, and
  returned in time order of the payloads' own times (``occurred_at`` equals that time);
- ``run_load``: a live world at about ``rate`` events/s with times = now, where a pool of active
  aggregates keeps receiving events, so inboxes and listings change while you watch.

Ids carry a tag — the seed, or a random one in live mode — so streams of different seeds never
collide on one broker: ``t-<tag>-<n>``, ``r-…``, ``p-…``, ``w-…``. User ids (``u-1``…) are shared,
with a skew that gives ``u-1``, ``u-2``… heavy inboxes; requests are worked by ``tech-1``….
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import random
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Callable, Iterable

import orjson

from readside.shared.errors import RetryableError

__all__ = [
    "DLQ_SUFFIX",
    "MAX_MESSAGE_BYTES",
    "TOPICS",
    "Record",
    "ensure_topics",
    "mixed_stream",
    "provider_stream",
    "publish",
    "request_stream",
    "run_load",
    "thread_stream",
    "workflow_stream",
]

TOPICS = ("threads.events", "payments.events", "requests.events", "providers.events",
          "workflows.events")
DLQ_SUFFIX = ".dlq"
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # topic max.message.bytes and producer max_request_size

_DEFAULT_START = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
_UNIX = datetime(1970, 1, 1, tzinfo=UTC)
_SPAN_MS = 14 * 24 * 3600 * 1000
_PNG_1PX = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5E"
            "rkJggg==")


@dataclass(frozen=True)
class Record:
    topic: str  # the base topic name, e.g. "threads.events"; a prefix is added when publishing
    key: str
    value: dict[str, Any]  # the envelope


# --- shared plumbing --------------------------------------------------------------------------

def _iso(ms: int) -> str:
    """RFC 3339 UTC with milliseconds and ``Z``: ``2026-11-22T10:15:00.123Z`` (sorts as text)."""
    day, rest = divmod(ms, 86_400_000)
    seconds, millis = divmod(rest, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{_date(day)}T{hour:02d}:{minute:02d}:{second:02d}.{millis:03d}Z"


@functools.lru_cache(maxsize=4096)
def _date(day: int) -> str:
    return (_UNIX + timedelta(days=day)).date().isoformat()


def _ms(when: datetime) -> int:
    return (when.astimezone(UTC) - _UNIX) // timedelta(milliseconds=1)


def _time_order(records: list[Record]) -> list[Record]:
    # Stable: events of one aggregate at one instant keep the order they were made in.
    return sorted(records, key=lambda r: r.value["occurred_at"])


class _World:
    """What simulations share: the random source, id counters, the user pool, known parents."""

    def __init__(self, kind: str, seed: int | None, users: int, live: bool = False) -> None:
        if users < 2:
            raise ValueError(f"users must be at least 2 (a thread has two participants), got {users}")
        if seed is None:
            self.rng = random.Random()
            self.tag = f"{self.rng.getrandbits(24):06x}"
        else:
            self.rng = random.Random(f"{kind}:{seed}")
            self.tag = f"live{seed}" if live else str(seed)
        self.users = users
        self.parents: list[str] = []  # top-level request ids, for subtasks
        self._counters: dict[str, itertools.count[int]] = {}

    def next_id(self, prefix: str) -> str:
        counter = self._counters.setdefault(prefix, itertools.count(1))
        return f"{prefix}-{self.tag}-{next(counter)}"

    def user(self, skew: float = 1.0) -> str:
        """A user id; ``skew`` > 1 favours the first ids, which get the heavy inboxes."""
        return f"u-{int(self.users * self.rng.random() ** skew) + 1}"

    def gap(self, scale: float = 1.0) -> int:
        """Milliseconds to an aggregate's next event: mostly minutes, sometimes hours or a day."""
        roll = self.rng.random()
        mean = 180_000 if roll < 0.65 else 3 * 3_600_000 if roll < 0.93 else 20 * 3_600_000
        return 1_000 + int(self.rng.expovariate(1 / (mean * scale)))

    def event(self, topic: str, key: str, type_: str, payload: dict[str, Any], at: int) -> Record:
        event_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        return Record(topic, key, {"event_id": event_id, "type": type_, "schema_version": 1,
                                   "occurred_at": _iso(at), "payload": payload})


class _Sim:
    topic = ""
    gap_scale = 1.0

    def __init__(self, world: _World) -> None:
        self.w = world
        self.rng = world.rng
        self.id = ""
        self.done = False
        self._last = -1

    def at(self, now: int) -> int:
        """The time of this aggregate's next event: ``now``, or just after its previous one."""
        self._last = max(now, self._last + 1)
        return self._last

    def emit(self, type_: str, payload: dict[str, Any], at: int, topic: str | None = None) -> Record:
        return self.w.event(topic or self.topic, self.id, type_, payload, at)

    def start(self, now: int) -> list[Record]:
        raise NotImplementedError

    def step(self, now: int) -> list[Record]:
        raise NotImplementedError


def _run(make: Callable[[], _Sim], count: int, world: _World, start: datetime | None) -> list[Record]:
    """Simulate ``count`` aggregates to completion, each starting somewhere in a two-week span.

    Aggregates start in the order they are made (ids and creation times agree), so a subtask
    is always created after its parent.
    """
    origin = _ms(start or _DEFAULT_START)
    starts = sorted(origin + world.rng.randrange(_SPAN_MS) for _ in range(count))
    records: list[Record] = []
    previous = origin - 1
    for first in starts:
        sim = make()
        now = previous = max(first, previous + 1)
        records += sim.start(now)
        while not sim.done:
            now += world.gap(sim.gap_scale)
            records += sim.step(now)
    return _time_order(records)


# --- realistic text ---------------------------------------------------------------------------

_FIRST = ("Ann", "Bob", "Thandi", "Sipho", "Lerato", "Pieter", "Aisha", "Johan", "Naledi", "Chen",
          "Maria", "David", "Zanele", "Kyle", "Fatima", "Liam", "Ayanda", "Emma", "Ravi", "Olivia")
_LAST = ("Lee", "Khumalo", "van der Merwe", "Naidoo", "Dlamini", "Smith", "Botha", "Mokoena",
         "Pillay", "O'Brien", "Nkosi", "Jacobs", "Adams", "Ndlovu", "Fourie", "García")
_BUSINESS = ("{f} {l} Events", "DJ {f}", "{l} Sound & Light", "{f}'s Studio", "Sounds by {f}",
             "{l} Photography", "The {l} Collective", "{f} Live")
_CLIENT_LINES = (
    "Hi! Are you free on the {day}?", "We're planning a {event} for about {guests} guests.",
    "What would you charge for {hours} hours?", "Do you bring your own equipment?",
    "Could you send a few samples of previous work?", "Great, thanks so much!",
    "The venue is in {place}, is travel included?", "Can we move the start time to {clock}?",
    "Perfect 👍", "Sorry for the late reply, it's been a crazy week.",
    "My partner loved your last set, so we'd really like to book you.",
    "Is a deposit needed to secure the date?", "Would it be possible to add an extra hour on the night?",
)
_PROVIDER_LINES = (
    "Hi, thanks for reaching out!", "Yes, I'm available on that date.",
    "My rate is R{rate} per hour, sound equipment included.", "I've attached a quote for you.",
    "Could you share the venue address?", "Sounds good, I'll pencil you in.",
    "Payment secures the booking.", "Looking forward to it!",
    "Travel within {place} is included; further out is charged per km.",
    "I usually arrive an hour early to set up and sound-check.",
    "Let me know if you have a playlist or any must-play songs.",
)
_TICKET_TITLES = ("Printer on floor {n} is offline", "Cannot log in to the VPN", "Laptop won't charge",
                  "New starter needs accounts", "Email bouncing for external domain",
                  "Projector in boardroom {n} flickers", "Request access to the finance share",
                  "Wi-Fi drops in building {n}", "Replace broken monitor", "Install design software")
_TICKET_LINES = ("It started this morning.", "I've already tried restarting it.",
                 "Could you take a look today? It's blocking the team.",
                 "Can you try again now?", "I've reset it on our side.",
                 "Is this still happening?", "Thanks, that fixed it!", "Still the same, sorry.",
                 "I'll need remote access to your machine, please accept the prompt.",
                 "Screenshot attached.")
_EVENTS = ("wedding", "birthday party", "corporate year-end function", "matric dance", "product launch")
_PLACES = ("Cape Town", "Johannesburg", "Durban", "Pretoria", "Stellenbosch", "Gqeberha")


def _sentences(rng: random.Random, lines: tuple[str, ...]) -> str:
    count = rng.choices((1, 2, 3, 4, 6), weights=(45, 30, 15, 7, 3))[0]
    text = " ".join(rng.choice(lines) for _ in range(count))
    if "{" in text:
        text = text.format(
            day=f"{rng.randint(1, 28)}th", event=rng.choice(_EVENTS), guests=rng.randrange(20, 400, 10),
            hours=rng.randint(2, 8), place=rng.choice(_PLACES), clock=f"{rng.randint(14, 20)}:00",
            rate=rng.randrange(800, 5000, 50), n=rng.randint(1, 6))
    roll = rng.random()
    if roll < 0.06:  # people press enter twice and pad with spaces
        text = text.replace(". ", ".\n\n", 1).replace("? ", "?  \n", 1)
    elif roll < 0.10:
        text = f"  {text}   "
    return text


def _profile(uid: str) -> tuple[str, str | None, str | None]:
    """A user's (name, business_name, avatar_url): the same for a user id in every stream."""
    rng = random.Random(f"user:{uid}")
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    business = None if rng.random() < 0.35 else rng.choice(_BUSINESS).format(f=first, l=last)
    return f"{first} {last}", business, _avatar(rng, uid)


def _avatar(rng: random.Random, owner: str) -> str | None:
    roll = rng.random()
    if roll < 0.25:
        return None
    if roll < 0.40:
        return f"data:image/png;base64,{_PNG_1PX}"
    return f"https://cdn.example/avatars/{owner}.jpg"


# --- marketplace threads ----------------------------------------------------------------------

_SERVICES = ("live_performance", "dj_set", "photography", "videography", "catering", "mc_hosting",
             "sound_hire", "wedding_band", "lighting")
_NEXT_STATE = {"pending_quote": ("quoted", "quoted", "declined", "expired"),
               "quoted": ("pending_payment", "pending_payment", "cancelled"),
               "pending_payment": ("booked", "cancelled"), "booked": ("completed", "completed", "cancelled")}


class _ThreadSim(_Sim):
    topic = "threads.events"

    def __init__(self, world: _World, messages: int) -> None:
        super().__init__(world)
        rng = self.rng
        self.id = world.next_id("t")
        self.client, self.provider = world.user(1.5), world.user(2.5)
        while self.provider == self.client:
            self.provider = world.user(1.0)
        self.video = rng.random() < 0.10
        self.state = "pending_payment" if self.video else rng.choices(
            ("pending_quote", "quoted", "pending_payment"), weights=(85, 10, 5))[0]
        self.remaining = messages
        self.unpaid = rng.random() < (0.85 if self.video else 0.3)
        # the payment and the reminder come after this many messages (never more than the thread has)
        self.pay_after = min(messages, rng.randint(0, 2) if self.video else rng.randint(1, max(1, messages)))
        self.remind_after = rng.randint(0, messages) if rng.random() < 0.2 else None
        self.messages: list[tuple[str, int, str | None]] = []  # (message_id, created ms, sender)
        self.deleted: set[str] = set()
        self.marks: dict[str, int] = {}
        self.pins: dict[str, bool] = {}

    def start(self, now: int) -> list[Record]:
        t = self.at(now)
        (c_name, _, c_avatar), (p_name, p_business, p_avatar) = _profile(self.client), _profile(self.provider)
        started = self.emit("thread.started", {
            "thread_id": self.id, "client": {"id": self.client, "name": c_name, "avatar_url": c_avatar},
            "provider": {"id": self.provider, "name": p_name, "business_name": p_business,
                         "avatar_url": p_avatar},
            "service_type": "personalized_video" if self.video else self.rng.choice(_SERVICES),
            "state": self.state, "created_at": _iso(t)}, t)
        if self.rng.random() < 0.7:
            return [started, self._message(now, None, f"New booking request from {c_name}",
                                           "new_booking_request", None)]
        return [started]

    def step(self, now: int) -> list[Record]:
        rng = self.rng
        if self.unpaid and len(self.messages) >= self.pay_after:
            out = self._payment(now)
        elif self.remind_after is not None and len(self.messages) >= self.remind_after:
            self.remind_after, days = None, rng.choice((1, 2, 3, 7))
            date = (_UNIX + timedelta(milliseconds=now, days=days)).date().isoformat()
            out = [self._message(now, None, f"Reminder: your event is in {days} days",
                                 "event_reminder", {"days_before": days, "date": date})]
        else:
            roll = rng.random()
            out = (self._read(now) if roll < 0.22 else self._delete(now) if roll < 0.26
                   else self._pin(now) if roll < 0.30 else self._state(now) if roll < 0.34 else [])
            if not out and self.remaining > 0:
                self.remaining -= 1
                out = [self._user_message(now)]
        self.done = self.remaining <= 0 and not self.unpaid and self.remind_after is None
        return out

    def _message(self, now: int, sender: str | None, content: str, key: str | None,
                 args: dict[str, Any] | None, attachment: dict[str, str] | None = None,
                 visible_to: str = "both") -> Record:
        t = self.at(now)
        message_id = self.w.next_id("m")
        self.messages.append((message_id, t, sender))
        sender_type = "system" if sender is None else "client" if sender == self.client else "provider"
        return self.emit("message.created", {
            "thread_id": self.id, "message_id": message_id, "sender_id": sender,
            "sender_type": sender_type, "message_type": "system" if sender is None else "user",
            "visible_to": visible_to, "content": content, "system_key": key, "system_args": args,
            "attachment": attachment, "created_at": _iso(t)}, t)

    def _user_message(self, now: int) -> Record:
        rng = self.rng
        last = next((s for _, _, s in reversed(self.messages) if s is not None), self.provider)
        other = self.client if last == self.provider else self.provider
        sender = other if rng.random() < 0.7 else last
        content = _sentences(rng, _CLIENT_LINES if sender == self.client else _PROVIDER_LINES)
        attachment = None
        if rng.random() < 0.07:
            kind = rng.choice(("image", "file"))
            ext = "jpg" if kind == "image" else "pdf"
            url = f"https://cdn.example/uploads/{self.id}/{rng.getrandbits(32):08x}.{ext}"
            attachment = {"kind": kind, "url": url}
            content = "" if rng.random() < 0.6 else content
        visible = "both" if rng.random() < 0.95 else rng.choice(("client", "provider"))
        return self._message(now, sender, content, None, None, attachment, visible)

    def _payment(self, now: int) -> list[Record]:
        rng, t = self.rng, self.at(now)
        self.unpaid = False
        amount = rng.randrange(25_000, 150_000, 500) if self.video else rng.randrange(150_000, 2_500_000, 500)
        out = [self.emit("payment.received", {
            "thread_id": self.id, "payment_id": self.w.next_id("pay"), "amount_cents": amount,
            "currency": rng.choices(("ZAR", "USD", "EUR", "GBP"), weights=(80, 10, 5, 5))[0],
            "received_at": _iso(t)}, t, topic="payments.events")]
        if rng.random() < 0.7:
            visible = "both" if rng.random() < 0.7 else "provider"
            out.append(self._message(now, None, "Payment received", "payment_received", None, None, visible))
        if self.state in ("pending_quote", "quoted", "pending_payment") and rng.random() < 0.7:
            out += self._state(now, "booked")
        return out

    def _read(self, now: int) -> list[Record]:
        reader = self.rng.choice((self.client, self.provider))
        mark = self.marks.get(reader, -1)
        unread = [created for _, created, sender in self.messages if created > mark and sender != reader]
        if not unread:
            return []
        self.marks[reader] = up_to = unread[-1] if self.rng.random() < 0.8 else self.rng.choice(unread)
        t = self.at(now)
        return [self.emit("message.read", {"thread_id": self.id, "reader_id": reader,
                                           "read_up_to": _iso(up_to), "read_at": _iso(t)}, t)]

    def _delete(self, now: int) -> list[Record]:
        mine = [m for m, _, sender in self.messages[-5:] if sender is not None and m not in self.deleted]
        if not mine:
            return []
        message_id, t = self.rng.choice(mine), self.at(now)
        self.deleted.add(message_id)
        return [self.emit("message.deleted", {"thread_id": self.id, "message_id": message_id,
                                              "deleted_at": _iso(t)}, t)]

    def _pin(self, now: int) -> list[Record]:
        user, t = self.rng.choice((self.client, self.provider)), self.at(now)
        self.pins[user] = pinned = not self.pins.get(user, False)
        return [self.emit("thread.pinned", {"thread_id": self.id, "user_id": user, "pinned": pinned,
                                            "changed_at": _iso(t)}, t)]

    def _state(self, now: int, state: str | None = None) -> list[Record]:
        choices = _NEXT_STATE.get(self.state)
        if state is None and not choices:
            return []
        self.state, t = state or self.rng.choice(choices or ()), self.at(now)
        return [self.emit("thread.state_changed", {"thread_id": self.id, "state": self.state,
                                                   "changed_at": _iso(t)}, t)]


def thread_stream(*, threads: int, messages_per_thread: tuple[int, int] = (3, 30),
                  users: int | None = None, seed: int = 0, start: datetime | None = None) -> list[Record]:
    """Marketplace threads on ``threads.events`` plus their payments on ``payments.events``.

    ``messages_per_thread`` bounds the user messages; system messages, reads, deletes, pins,
    state changes and payments come on top. ``users`` defaults to a third of ``threads``.
    """
    low, high = messages_per_thread
    world = _World("threads", seed, users or max(10, threads // 3))
    return _run(lambda: _ThreadSim(world, world.rng.randint(low, high)), threads, world, start)


# --- support desk requests --------------------------------------------------------------------

_NEXT_STATUS = {"new": ("open", "in_progress"), "open": ("in_progress", "pending_requester", "solved"),
                "in_progress": ("pending_requester", "pending_subtask", "solved", "solved"),
                "pending_requester": ("in_progress", "solved"), "pending_subtask": ("in_progress",),
                "solved": ("closed", "closed", "closed", "open"), "closed": ()}
_PRIORITIES = ("low", "normal", "high", "urgent")


class _RequestSim(_Sim):
    topic = "requests.events"
    gap_scale = 2.0

    def __init__(self, world: _World, steps: int, technicians: int) -> None:
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
        title = rng.choice(_TICKET_TITLES).format(n=rng.randint(1, 6))
        return [self.emit("request.created", {
            "request_id": self.id, "requester_id": self.requester,
            "business_unit_id": rng.randint(1, 5), "title": title,
            "priority": rng.choices(_PRIORITIES, weights=(20, 50, 20, 10))[0], "status": self.status,
            "parent_id": self.parent, "created_at": _iso(t)}, t)]

    def step(self, now: int) -> list[Record]:
        rng = self.rng
        roll, t = rng.random(), self.at(now)
        p = {"request_id": self.id}
        if roll < 0.15 and not self.assignees:
            tech = rng.choice(self.techs)
            self.assignees.add(tech)
            out = self.emit("request.taken", {**p, "technician_id": tech, "taken_at": _iso(t)}, t)
        elif roll < 0.22:
            self.assignees = set(rng.sample(self.techs, rng.choice((0, 1, 1, 1, 2))))
            out = self.emit("request.assigned", {**p, "assignee_ids": sorted(self.assignees),
                                                 "assigned_at": _iso(t)}, t)
        elif roll < 0.50 or (roll >= 0.80 and not self.messages):
            out = self.emit("request.updated", {**p, "changes": self._changes(), "updated_at": _iso(t)}, t)
        elif roll < 0.80:
            role, sender = self._someone()
            self.messages.append((t, sender))
            out = self.emit("request.message_created", {
                **p, "message_id": self.w.next_id("rm"), "sender_id": sender, "sender_role": role,
                "content": _sentences(rng, _TICKET_LINES), "created_at": _iso(t)}, t)
        else:
            role, reader = self._someone()
            up_to = max(self.marks.get(reader, -1), self.messages[-1][0])
            self.marks[reader] = up_to
            out = self.emit("request.message_read", {**p, "reader_id": reader, "reader_role": role,
                                                     "read_up_to": _iso(up_to), "read_at": _iso(t)}, t)
        self.remaining -= 1
        self.done = self.remaining <= 0 or self.status == "closed"
        return [out]

    def _someone(self) -> tuple[str, str]:
        """(role, user id): the requester, or a technician — an assignee where there is one."""
        if self.rng.random() < 0.5:
            return "requester", self.requester
        return "technician", self.rng.choice(sorted(self.assignees) or self.techs)

    def _changes(self) -> dict[str, Any]:
        rng, changes = self.rng, {}
        if _NEXT_STATUS[self.status] and rng.random() < 0.75:
            self.status = changes["status"] = rng.choice(_NEXT_STATUS[self.status])
        if rng.random() < 0.15:
            changes["priority"] = rng.choice(_PRIORITIES)
        if rng.random() < 0.08:
            changes["title"] = rng.choice(_TICKET_TITLES).format(n=rng.randint(1, 6)) + " (updated)"
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
    world = _World("requests", seed, users or max(10, requests // 2))
    return _run(lambda: _RequestSim(world, world.rng.randint(low, high), technicians), requests, world, start)


# --- service providers ------------------------------------------------------------------------

_CATEGORIES = ("DJ", "Sound Service", "Photographer", "Live Band", "MC", "Videographer", "Caterer",
               "Lighting", "Event Planner")
_CATEGORY_VARIANTS = {"DJ": " dj ", "Sound Service": "sound-service", "Live Band": "Live  Band"}


class _ProviderSim(_Sim):
    topic = "providers.events"
    gap_scale = 8.0

    def __init__(self, world: _World) -> None:
        super().__init__(world)
        rng = self.rng
        self.id = world.next_id("p")
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        category = rng.choices(_CATEGORIES, weights=(25, 15, 20, 12, 8, 8, 5, 4, 3))[0]
        if category in _CATEGORY_VARIANTS and rng.random() < 0.05:  # raw display strings vary
            category = _CATEGORY_VARIANTS[category]
        self.profile: dict[str, Any] = {
            "provider_id": self.id,
            "business_name": None if rng.random() < 0.05 else rng.choice(_BUSINESS).format(f=first, l=last),
            "avatar_url": _avatar(rng, self.id), "category": category,
            "location": None if rng.random() < 0.1 else rng.choice(_PLACES),
            "hourly_rate_cents": None if rng.random() < 0.1 else rng.randrange(30_000, 400_000, 500),
            "price_visible": rng.random() < 0.8,
            "custom_subtitle": None if rng.random() < 0.6
            else f"{rng.randint(2, 20)} years of {category.strip().lower()}",
            "status": rng.choices(("active", "inactive", "suspended"), weights=(90, 7, 3))[0]}
        self.remaining = 1 + int(60 * rng.random() ** 3)  # a few popular providers, a long tail
        self.bookings = self.reviews = 0

    def start(self, now: int) -> list[Record]:
        t = self.at(now)
        return [self.emit("provider.profile_updated", {**self.profile, "updated_at": _iso(t)}, t)]

    def step(self, now: int) -> list[Record]:
        rng, roll = self.rng, self.rng.random()
        self.remaining -= 1
        self.done = self.remaining <= 0
        if roll < 0.1:
            if rng.random() < 0.5:
                self.profile["hourly_rate_cents"] = rng.randrange(30_000, 400_000, 500)
            if rng.random() < 0.3:
                self.profile["price_visible"] = not self.profile["price_visible"]
            if rng.random() < 0.15:
                self.profile["status"] = rng.choice(("active", "active", "inactive", "suspended"))
            return self.start(now)
        t = self.at(now)
        if roll < 0.65 or self.reviews >= self.bookings:
            self.bookings += 1
            return [self.emit("booking.confirmed", {"provider_id": self.id, "booking_id": self.w.next_id("b"),
                                                    "confirmed_at": _iso(t)}, t)]
        self.reviews += 1
        return [self.emit("review.posted", {
            "provider_id": self.id, "review_id": self.w.next_id("rv"),
            "rating": rng.choices((1, 2, 3, 4, 5), weights=(3, 4, 10, 30, 53))[0], "posted_at": _iso(t)}, t)]


def provider_stream(*, providers: int, seed: int = 0, start: datetime | None = None) -> list[Record]:
    """Provider listings on ``providers.events``: profile snapshots, bookings and reviews."""
    world = _World("providers", seed, 2)
    return _run(lambda: _ProviderSim(world), providers, world, start)


# --- workflows --------------------------------------------------------------------------------

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


class _WorkflowSim(_Sim):
    topic = "workflows.events"
    gap_scale = 4.0

    def __init__(self, world: _World, versions: int) -> None:
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
            "is_template": rng.random() < 0.1, "created_at": _iso(t)}, t)]

    def step(self, now: int) -> list[Record]:
        rng, t = self.rng, self.at(now)
        self.remaining -= 1
        self.done = self.remaining <= 0
        if self.done and rng.random() < 0.1:
            return [self.emit("workflow.deleted", {"workflow_id": self.id, "deleted_at": _iso(t)}, t)]
        self.version += 1
        self.size += rng.randint(0, 4)
        nodes, edges = _graph(rng, self.size)
        return [self.emit("workflow.version_saved", {
            "workflow_id": self.id, "version_number": self.version, "nodes": nodes, "edges": edges,
            "saved_at": _iso(t)}, t)]


def workflow_stream(*, workflows: int, versions: tuple[int, int] = (1, 8), users: int | None = None,
                    seed: int = 0, start: datetime | None = None) -> list[Record]:
    """Workflows on ``workflows.events``: ~10% templates, a few deleted, some very large."""
    low, high = versions
    world = _World("workflows", seed, users or max(10, workflows // 2))
    return _run(lambda: _WorkflowSim(world, world.rng.randint(low, high)), workflows, world, start)


def mixed_stream(scale: int, seed: int = 0, *, start: datetime | None = None) -> list[Record]:
    """All five topics in time order: about 800 events per unit of ``scale``."""
    users = max(10, 20 * scale // 3)
    records = (thread_stream(threads=20 * scale, users=users, seed=seed, start=start)
               + request_stream(requests=10 * scale, users=users, seed=seed, start=start)
               + provider_stream(providers=10 * scale, seed=seed, start=start)
               + workflow_stream(workflows=5 * scale, users=users, seed=seed, start=start))
    return _time_order(records)


# --- publishing -------------------------------------------------------------------------------

def _producer(bootstrap: str) -> Any:
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=MAX_MESSAGE_BYTES, linger_ms=5)


async def _start(client: Any, bootstrap: str) -> None:
    from aiokafka.errors import KafkaConnectionError

    try:
        await client.start()
    except KafkaConnectionError as exc:
        raise RetryableError(f"cannot reach the Kafka broker at {bootstrap}: start it, or set "
                             f"READSIDE_KAFKA_BOOTSTRAP ({exc})") from exc


async def publish(records: Iterable[Record], *, bootstrap: str, prefix: str = "",
                  rate: float | None = None, progress: Callable[[int, int], None] | None = None) -> int:
    """Send ``records`` in order to ``prefix + record.topic``; return how many the broker acked.

    ``rate`` caps events/s; ``progress(done, total)`` is called about once a second and at the end.
    """
    items = list(records)
    producer = _producer(bootstrap)
    done, pending = 0, []
    began = last_report = time.monotonic()
    try:
        await _start(producer, bootstrap)
        for i, record in enumerate(items):
            if rate:
                ahead = began + i / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            pending.append(await producer.send(prefix + record.topic, orjson.dumps(record.value),
                                               key=record.key.encode()))
            if len(pending) >= 2000 or (rate and len(pending) >= max(1, int(rate // 10))):
                await asyncio.gather(*pending)
                done, pending = done + len(pending), []
            if progress and time.monotonic() - last_report >= 1.0:
                last_report = time.monotonic()
                progress(done, len(items))
        await asyncio.gather(*pending)
        done += len(pending)
    finally:
        await producer.stop()
    if progress:
        progress(done, len(items))
    return done


async def ensure_topics(bootstrap: str, prefix: str = "", partitions: int = 3) -> None:
    """Create the contract topics and their ``.dlq`` topics where missing (full retention)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    names = [prefix + t + suffix for t in TOPICS for suffix in ("", DLQ_SUFFIX)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await _start(admin, bootstrap)
        missing = [n for n in names if n not in set(await admin.list_topics())]
        if not missing:
            return
        configs = {"max.message.bytes": str(MAX_MESSAGE_BYTES), "retention.ms": "-1"}
        response = await admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=1, topic_configs=configs)
             for n in missing])
        for topic, code, *message in response.topic_errors:
            if code and for_code(code) is not TopicAlreadyExistsError:
                raise for_code(code)(f"creating topic {topic}: {message[0] if message else ''}")
    finally:
        await admin.close()


# --- live load --------------------------------------------------------------------------------

class _LiveWorld:
    """Pools of active aggregates; each call advances one of them (or starts a new one) at ``now``."""

    KINDS = ("threads", "requests", "providers", "workflows")
    WEIGHTS = (72, 14, 9, 5)
    TARGETS = {"threads": 40, "requests": 15, "providers": 25, "workflows": 8}

    def __init__(self, seed: int | None) -> None:
        self.world = _World("live", seed, users=60, live=True)
        self.pools: dict[str, list[_Sim]] = {kind: [] for kind in self.KINDS}

    def _new(self, kind: str) -> _Sim:
        w = self.world
        if kind == "threads":
            return _ThreadSim(w, w.rng.randint(5, 40))
        if kind == "requests":
            return _RequestSim(w, w.rng.randint(3, 20), technicians=8)
        if kind == "providers":
            return _ProviderSim(w)
        return _WorkflowSim(w, w.rng.randint(1, 10))

    def next(self, now: int) -> list[Record]:
        rng = self.world.rng
        kind = rng.choices(self.KINDS, weights=self.WEIGHTS)[0]
        pool = self.pools[kind]
        if len(pool) < self.TARGETS[kind] or rng.random() < 0.03:
            sim = self._new(kind)
            pool.append(sim)
            return sim.start(now)
        sim = rng.choice(pool)
        records = sim.step(now)
        if sim.done:
            pool.remove(sim)
        return records


async def run_load(*, bootstrap: str, prefix: str = "", rate: float = 50.0, duration: float | None = None,
                   seed: int | None = None, stop: asyncio.Event | None = None) -> int:
    """Publish a live stream at about ``rate`` events/s, times = now, until ``duration`` or ``stop``.

    Returns the number of events the broker acknowledged. Prints progress to stderr every 5 s.
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    live = _LiveWorld(seed)
    producer = _producer(bootstrap)
    sent = 0
    began = report_at = time.monotonic()
    reported = 0
    try:
        await _start(producer, bootstrap)
        while not (stop is not None and stop.is_set()):
            elapsed = time.monotonic() - began
            if duration is not None and elapsed >= duration:
                break
            pending = []
            while sent + len(pending) < int(elapsed * rate) + 1:
                for record in live.next(_ms(datetime.now(UTC))):
                    pending.append(await producer.send(prefix + record.topic, orjson.dumps(record.value),
                                                       key=record.key.encode()))
            await asyncio.gather(*pending)
            sent += len(pending)
            if time.monotonic() - report_at >= 5.0:
                now = time.monotonic()
                per_second = (sent - reported) / (now - report_at)
                print(f"readside load: {sent} events sent, {per_second:.0f} events/s",
                      file=sys.stderr, flush=True)
                report_at, reported = now, sent
            wait = min(0.2, sent / rate - (time.monotonic() - began))
            if wait > 0:
                if stop is None:
                    await asyncio.sleep(wait)
                else:
                    try:
                        await asyncio.wait_for(stop.wait(), wait)
                    except TimeoutError:
                        pass
    finally:
        await producer.stop()
    return sent
