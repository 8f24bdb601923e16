"""Payments per thread, the pure core: fold ``payment.received`` events into a thread's payments
and render its totals. No I/O here.

A payment is a fact named by its ``payment_id``: the first event for an id wins, and a later one
for the same id (a producer's retry under a new ``event_id``, or a correction the contract does not
define) changes nothing. So the totals do not depend on arrival order, nor on how often an event
was sent. A payment may arrive before its thread exists: it is kept, and shown once the thread is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from readside.schemas import Event, PaymentReceived

__all__ = ["Payment", "ThreadPayments", "fold_all", "fold_into", "render"]


@dataclass(frozen=True, slots=True)
class Payment:
    payment_id: str
    amount_cents: int
    currency: str
    received_at: datetime


@dataclass(slots=True)
class ThreadPayments:
    thread_id: str
    payments: dict[str, Payment] = field(default_factory=dict)  # by payment_id, first wins


def fold_into(state: ThreadPayments, event: Event) -> None:
    p = event.payload
    if isinstance(p, PaymentReceived) and p.payment_id not in state.payments:
        state.payments[p.payment_id] = Payment(p.payment_id, p.amount_cents, p.currency, p.received_at)


def fold_all(events: Iterable[Event], states: dict[str, ThreadPayments] | None = None) -> dict[str, ThreadPayments]:
    states = {} if states is None else states
    for event in events:
        thread_id = event.payload.thread_id  # type: ignore[attr-defined]
        fold_into(states.setdefault(thread_id, ThreadPayments(thread_id)), event)
    return states


def render(state: ThreadPayments) -> dict[str, Any]:
    """What ``GET /v1/threads/{id}/payments`` shows: the number of payments, the latest
    ``received_at``, and per currency (in code order) the sum and the number of payments."""
    totals: dict[str, list[int]] = {}
    for payment in state.payments.values():
        total = totals.setdefault(payment.currency, [0, 0])
        total[0] += payment.amount_cents
        total[1] += 1
    return {
        "thread_id": state.thread_id,
        "payments": len(state.payments),
        "last_received_at": max((p.received_at for p in state.payments.values()), default=None),
        "totals": [
            {"currency": currency, "amount_cents": cents, "payments": count}
            for currency, (cents, count) in sorted(totals.items())
        ],
    }
