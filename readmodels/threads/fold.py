"""Thread read models, the pure core: fold events into a thread's state, render previews.

``ThreadState`` is what the read model knows of one thread: who started it, its state, its
messages (metadata plus the ready preview label), read markers, pins and whether it is paid.
Every part merges commutatively — first ``thread.started`` wins, registers keep the value with
the latest time (ties broken by value), a read marker keeps the greatest ``read_up_to`` whatever
its ``read_at`` (a stale client re-sending an old position never moves it back), messages are a
set keyed by id with deletion as a sticky flag — so any interleaving across topics that keeps
per-key order folds to the same state as time order. ``render`` derives both participants' preview
rows from the state alone; a message not from a participant (``rules.from_participant``) is kept in the
state but rendered as never sent, since the participants may only be known after it arrives.

No I/O here: the same code serves live projection, rebuild and tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from readside.readmodels.avatars.fold import shipped
from readside.readmodels.threads.rules import further, is_paid, unread, visible
from readside.schemas import (
    Event,
    MessageCreated,
    MessageDeleted,
    MessageRead,
    PaymentReceived,
    ThreadPinned,
    ThreadStarted,
    ThreadStateChanged,
)

__all__ = [
    "Message",
    "PreviewRow",
    "Side",
    "Started",
    "ThreadState",
    "fold",
    "fold_all",
    "message_preview",
    "normalize_text",
    "render",
    "render_sides",
    "sides",
]

PREVIEW_CHARS = 100
HIDDEN_UNTIL_PAID = "personalized_video"


def normalize_text(content: str) -> str:
    """Whitespace runs collapsed (``str.split`` semantics, NBSP included), first 100 code points."""
    return " ".join(content.split())[:PREVIEW_CHARS]


def message_preview(
    content: str, system_key: str | None, system_args: dict[str, Any] | None, attachment: dict[str, Any] | None
) -> tuple[str, str | None, dict[str, Any] | None]:
    """``(label, preview_key, preview_args)`` for one message, per CONTRACT §2 previews."""
    if system_key == "new_booking_request":
        return "New booking request", system_key, {}
    if system_key == "payment_received":
        return "Payment received", system_key, {}
    if system_key == "event_reminder" and isinstance(system_args, dict) and "days_before" in system_args and "date" in system_args:
        days, date = system_args["days_before"], system_args["date"]
        # Keys in the order jsonb stores them (shorter first): a preview rendered from a message
        # loaded back from ``thread_messages.preview_args`` is then byte-identical to one rendered
        # from the event itself, however events were batched (``rebuild --verify`` compares bytes).
        return f"Event in {days} days: {date}", system_key, {"date": date, "daysBefore": days}
    text = normalize_text(content)
    if not text and attachment:
        text = "Sent an image" if attachment.get("kind") == "image" else "Sent a file"
    return text, None, None


@dataclass(frozen=True, slots=True)
class Started:
    client_id: str
    client_name: str
    client_avatar: str | None
    provider_id: str
    provider_name: str
    provider_business_name: str | None
    provider_avatar: str | None
    service_type: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Message:
    """Message metadata the previews need; ``created_at`` is None for a delete seen before its create."""

    message_id: str
    created_at: datetime | None
    sender_id: str | None = None
    sender_type: str | None = None
    visible_to: str = "both"
    system_key: str | None = None
    deleted: bool = False
    preview: str | None = None
    preview_key: str | None = None
    preview_args: dict[str, Any] | None = None


@dataclass
class ThreadState:
    thread_id: str
    started: Started | None = None
    state: tuple[datetime, str] | None = None
    paid_by_payment: bool = False
    messages: dict[str, Message] = field(default_factory=dict)
    reads: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)  # user -> (read_at, read_up_to)
    pins: dict[str, tuple[datetime, bool]] = field(default_factory=dict)  # user -> (changed_at, pinned)

    def copy(self) -> ThreadState:
        return replace(self, messages=dict(self.messages), reads=dict(self.reads), pins=dict(self.pins))


@dataclass(frozen=True, slots=True)
class PreviewRow:
    user_id: str
    thread_id: str
    role: str
    listed: bool
    last_ts: datetime
    unread_count: int
    item: dict[str, Any]


def _later(current: tuple[Any, Any] | None, candidate: tuple[Any, Any]) -> tuple[Any, Any]:
    return candidate if current is None or candidate > current else current


def fold_into(state: ThreadState, event: Event) -> None:
    """Apply one event to ``state`` in place (the batch owns its working copy)."""
    p = event.payload
    if isinstance(p, ThreadStarted):
        if state.started is None:
            state.started = Started(
                client_id=p.client.id,
                client_name=p.client.name,
                client_avatar=p.client.avatar_url,
                provider_id=p.provider.id,
                provider_name=p.provider.name,
                provider_business_name=p.provider.business_name,
                provider_avatar=p.provider.avatar_url,
                service_type=p.service_type,
                created_at=p.created_at,
            )
            state.state = _later(state.state, (p.created_at, p.state))
    elif isinstance(p, MessageCreated):
        known = state.messages.get(p.message_id)
        if known is not None and known.created_at is not None:
            return  # a second create of the same message: first wins
        attachment = p.attachment.model_dump() if p.attachment is not None else None
        label, key, args = message_preview(p.content, p.system_key, p.system_args, attachment)
        state.messages[p.message_id] = Message(
            message_id=p.message_id,
            created_at=p.created_at,
            sender_id=p.sender_id,
            sender_type=p.sender_type,
            visible_to=p.visible_to,
            system_key=p.system_key,
            deleted=known is not None and known.deleted,
            preview=label,
            preview_key=key,
            preview_args=args,
        )
    elif isinstance(p, MessageDeleted):
        known = state.messages.get(p.message_id)
        state.messages[p.message_id] = replace(known, deleted=True) if known else Message(p.message_id, None, deleted=True)
    elif isinstance(p, MessageRead):
        state.reads[p.reader_id] = further(state.reads.get(p.reader_id), (p.read_at, p.read_up_to))
    elif isinstance(p, ThreadStateChanged):
        state.state = _later(state.state, (p.changed_at, p.state))
    elif isinstance(p, ThreadPinned):
        state.pins[p.user_id] = _later(state.pins.get(p.user_id), (p.changed_at, p.pinned))
    elif isinstance(p, PaymentReceived):
        state.paid_by_payment = True


def fold(state: ThreadState, event: Event) -> ThreadState:
    """Pure: the state after ``event``."""
    new = state.copy()
    fold_into(new, event)
    return new


def fold_all(events: Iterable[Event], states: dict[str, ThreadState] | None = None) -> dict[str, ThreadState]:
    """Fold a stream into per-thread states (the reference the tests compare tables with)."""
    states = {} if states is None else states
    for event in events:
        tid = event.payload.thread_id  # type: ignore[attr-defined]
        fold_into(states.setdefault(tid, ThreadState(tid)), event)
    return states


@dataclass(frozen=True, slots=True)
class Side:
    """What one participant's preview needs of the messages: the latest visible one by
    ``(created_at, message_id)``, the unread count and the visible count."""

    last: Message | None
    unread_count: int
    message_count: int


def sides(state: ThreadState) -> dict[str, Side]:
    """Both participants' ``Side`` from the full message set (``started`` must be known)."""
    s = state.started
    assert s is not None
    live = sorted(
        (m for m in state.messages.values() if not m.deleted and m.created_at is not None),
        key=lambda m: (m.created_at, m.message_id),
    )
    out = {}
    for role, user in (("client", s.client_id), ("provider", s.provider_id)):
        seen = [m for m in live if visible(m, role, s)]
        marker = state.reads.get(user)
        out[role] = Side(seen[-1] if seen else None, sum(1 for m in seen if unread(m, role, user, marker, s)), len(seen))
    return out


def render(state: ThreadState) -> list[PreviewRow]:
    """Both participants' preview rows; none for a thread whose ``thread.started`` is unknown."""
    if state.started is None:
        return []
    return render_sides(state, is_paid(state), sides(state))


def render_sides(state: ThreadState, paid: bool, by_role: dict[str, Side]) -> list[PreviewRow]:
    """The preview rows from the thread's registers and each side's ``Side`` (the live path
    computes those from indexes and deltas instead of the full message set)."""
    s = state.started
    assert s is not None
    listed = paid or s.service_type != HIDDEN_UNTIL_PAID
    rows = []
    for role, user, name, avatar, other in (
        ("client", s.client_id, s.provider_business_name or s.provider_name, s.provider_avatar, s.provider_id),
        ("provider", s.provider_id, s.client_name, s.client_avatar, s.client_id),
    ):
        side = by_role[role]
        last = side.last
        last_ts = last.created_at if last else s.created_at
        pin = state.pins.get(user)
        item = {
            "thread_id": state.thread_id,
            "counterparty": {"name": name, "avatar_url": shipped(avatar, other)},
            "last_message_preview": last.preview if last else None,
            "last_actor": last.sender_type if last else None,
            "last_ts": last_ts,
            "unread_count": side.unread_count,
            "state": state.state[1] if state.state else None,
            "meta": {"service_type": s.service_type, "paid": paid, "message_count": side.message_count},
            "pinned": pin[1] if pin else False,
            "preview_key": last.preview_key if last else None,
            "preview_args": last.preview_args if last else None,
        }
        rows.append(PreviewRow(user, state.thread_id, role, listed, last_ts, side.unread_count, item))  # type: ignore[arg-type]
    return rows
