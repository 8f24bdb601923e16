"""Payloads of topic ``payments.events`` (record key: ``thread_id``).

A payment belongs to a marketplace thread but travels on its own topic, so it may arrive
before the thread it pays for: readers must not assume the thread exists yet.
"""

from __future__ import annotations

from readside.schemas._base import Id, Payload, Timestamp

__all__ = ["PaymentReceived"]


class PaymentReceived(Payload):
    """``payment.received``: marks the thread paid. ``amount_cents`` is an integer (no floats)."""

    thread_id: Id
    payment_id: Id
    amount_cents: int
    currency: str
    received_at: Timestamp
