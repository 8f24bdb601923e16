"""Payments per thread, the pure fold: first event per payment id wins, totals per currency, and
the rendering does not depend on arrival order or on re-sends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from readside.readmodels.payments.fold import fold_all, render
from readside.schemas import Event, decode, encode, make_event

BASE = datetime(2026, 11, 1, tzinfo=UTC)


def paid(thread: str, payment: str, cents: int, currency: str = "EUR", minute: int = 0) -> Event:
    envelope = make_event("payment.received", {
        "thread_id": thread, "payment_id": payment, "amount_cents": cents, "currency": currency,
        "received_at": (BASE + timedelta(minutes=minute)).isoformat(),
    })
    event = decode("payments.events", thread.encode(), encode(envelope))
    assert isinstance(event, Event)
    return event


def test_totals_per_currency_and_the_latest_time() -> None:
    states = fold_all([paid("t-1", "p-1", 1000), paid("t-1", "p-2", 250, minute=5), paid("t-1", "p-3", 700, "USD", 2),
                       paid("t-2", "p-1", 1)])
    assert render(states["t-1"]) == {
        "thread_id": "t-1",
        "payments": 3,
        "last_received_at": BASE + timedelta(minutes=5),
        "totals": [{"currency": "EUR", "amount_cents": 1250, "payments": 2},
                   {"currency": "USD", "amount_cents": 700, "payments": 1}],
    }
    assert render(states["t-2"])["totals"] == [{"currency": "EUR", "amount_cents": 1, "payments": 1}]


def test_the_first_event_of_a_payment_id_wins() -> None:
    """A second event for one payment id (a retry under a new event id) changes nothing."""
    states = fold_all([paid("t-1", "p-1", 1000), paid("t-1", "p-1", 99_999, "USD", 9)])
    assert render(states["t-1"])["totals"] == [{"currency": "EUR", "amount_cents": 1000, "payments": 1}]


payments = st.lists(
    st.tuples(st.sampled_from(["t-1", "t-2"]), st.sampled_from(["p-1", "p-2", "p-3"]), st.integers(0, 10**9),
              st.sampled_from(["EUR", "USD"]), st.integers(0, 600)),
    max_size=12, unique_by=lambda p: (p[0], p[1]),
)


@given(payments, st.randoms(use_true_random=False))
def test_arrival_order_and_re_sends_do_not_change_the_totals(facts: list, rng) -> None:
    events = [paid(*fact) for fact in facts]
    shuffled = events + rng.sample(events, k=len(events) // 2)  # some sent twice
    rng.shuffle(shuffled)
    assert {t: render(s) for t, s in fold_all(events).items()} == {t: render(s) for t, s in fold_all(shuffled).items()}
