"""Marketplace threads: a client and a provider chat, pay, get reminders, read, pin, delete."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from readside.load._text import CLIENT_LINES, PROVIDER_LINES, sentences, user_profile
from readside.load._world import UNIX, Record, Sim, World, iso, simulate

__all__ = ["ThreadSim", "thread_stream"]

_SERVICES = ("live_performance", "dj_set", "photography", "videography", "catering", "mc_hosting",
             "sound_hire", "wedding_band", "lighting")
_NEXT_STATE = {"pending_quote": ("quoted", "quoted", "declined", "expired"),
               "quoted": ("pending_payment", "pending_payment", "cancelled"),
               "pending_payment": ("booked", "cancelled"), "booked": ("completed", "completed", "cancelled")}


class ThreadSim(Sim):
    def __init__(self, world: World, messages: int) -> None:
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
        (c_name, _, c_avatar), (p_name, p_business, p_avatar) = user_profile(self.client), user_profile(self.provider)
        started = self.emit("thread.started", {
            "thread_id": self.id, "client": {"id": self.client, "name": c_name, "avatar_url": c_avatar},
            "provider": {"id": self.provider, "name": p_name, "business_name": p_business,
                         "avatar_url": p_avatar},
            "service_type": "personalized_video" if self.video else self.rng.choice(_SERVICES),
            "state": self.state, "created_at": iso(t)}, t)
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
            date = (UNIX + timedelta(milliseconds=now, days=days)).date().isoformat()
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
            "attachment": attachment, "created_at": iso(t)}, t)

    def _user_message(self, now: int) -> Record:
        rng = self.rng
        last = next((s for _, _, s in reversed(self.messages) if s is not None), self.provider)
        other = self.client if last == self.provider else self.provider
        sender = other if rng.random() < 0.7 else last
        content = sentences(rng, CLIENT_LINES if sender == self.client else PROVIDER_LINES)
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
            "received_at": iso(t)}, t)]
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
                                           "read_up_to": iso(up_to), "read_at": iso(t)}, t)]

    def _delete(self, now: int) -> list[Record]:
        mine = [m for m, _, sender in self.messages[-5:] if sender is not None and m not in self.deleted]
        if not mine:
            return []
        message_id, t = self.rng.choice(mine), self.at(now)
        self.deleted.add(message_id)
        return [self.emit("message.deleted", {"thread_id": self.id, "message_id": message_id,
                                              "deleted_at": iso(t)}, t)]

    def _pin(self, now: int) -> list[Record]:
        user, t = self.rng.choice((self.client, self.provider)), self.at(now)
        self.pins[user] = pinned = not self.pins.get(user, False)
        return [self.emit("thread.pinned", {"thread_id": self.id, "user_id": user, "pinned": pinned,
                                            "changed_at": iso(t)}, t)]

    def _state(self, now: int, state: str | None = None) -> list[Record]:
        choices = _NEXT_STATE.get(self.state)
        if state is None and not choices:
            return []
        self.state, t = state or self.rng.choice(choices or ()), self.at(now)
        return [self.emit("thread.state_changed", {"thread_id": self.id, "state": self.state,
                                                   "changed_at": iso(t)}, t)]


def thread_stream(*, threads: int, messages_per_thread: tuple[int, int] = (3, 30),
                  users: int | None = None, seed: int = 0, start: datetime | None = None) -> list[Record]:
    """Marketplace threads on ``threads.events`` plus their payments on ``payments.events``.

    ``messages_per_thread`` bounds the user messages; system messages, reads, deletes, pins,
    state changes and payments come on top. ``users`` defaults to a third of ``threads``.
    """
    low, high = messages_per_thread
    world = World("threads", seed, users or max(10, threads // 3))
    return simulate(lambda: ThreadSim(world, world.rng.randint(low, high)), threads, world, start)

