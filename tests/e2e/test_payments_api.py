"""The payments read model end to end: events in through Kafka, ``GET /v1/threads/{id}/payments``
answers its participants only, once per payment id, whatever arrived first."""

from __future__ import annotations

import pytest

from tests.support import auth, projection_topics, record, send, started, ts, wait_caught_up


def paid(tid: str, pid: str, cents: int, currency: str, at: float) -> object:
    return record("payment.received", {"thread_id": tid, "payment_id": pid, "amount_cents": cents,
                                       "currency": currency, "received_at": ts(at)})


RECORDS = [
    paid("t-1", "p-early", 300, "EUR", 5),  # before its thread
    started("t-1", client="u-ann", provider="u-bob", at=1),
    paid("t-1", "p-1", 1000, "EUR", 10),
    paid("t-1", "p-1", 99_999, "USD", 11),  # the same payment id again: changes nothing
    paid("t-1", "p-2", 700, "USD", 20),
    started("t-2", client="u-cat", provider="u-bob", at=2),
    paid("t-orphan", "p-9", 1, "EUR", 30),  # a thread that never started
]


@pytest.fixture(scope="module")
def loaded(stack):
    s = stack.settings
    send(s, RECORDS)
    wait_caught_up(s.database_url, s.kafka_bootstrap, "threads", projection_topics(s, "threads"))
    wait_caught_up(s.database_url, s.kafka_bootstrap, "payments", projection_topics(s, "payments"))
    return stack


def _get(stack, path: str, sub: str | None, **headers: str):
    if sub is not None:
        headers |= auth(stack, sub)
    with stack.client() as http:
        return http.get(path, headers=headers)


def test_both_participants_see_the_totals_each_payment_once(loaded) -> None:
    for sub in ("u-ann", "u-bob"):
        r = _get(loaded, "/v1/threads/t-1/payments", sub)
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "private, no-cache"
        assert r.json() == {
            "thread_id": "t-1", "payments": 3, "last_received_at": ts(20),
            "totals": [{"currency": "EUR", "amount_cents": 1300, "payments": 2},
                       {"currency": "USD", "amount_cents": 700, "payments": 1}],
        }


def test_a_thread_without_payments_has_empty_totals(loaded) -> None:
    r = _get(loaded, "/v1/threads/t-2/payments", "u-cat")
    assert r.status_code == 200
    assert r.json() == {"thread_id": "t-2", "payments": 0, "last_received_at": None, "totals": []}


def test_strangers_and_unknown_threads_get_the_same_404(loaded) -> None:
    stranger = _get(loaded, "/v1/threads/t-1/payments", "u-cat")
    unknown = _get(loaded, "/v1/threads/t-nope/payments", "u-cat")
    orphan = _get(loaded, "/v1/threads/t-orphan/payments", "u-ann")  # paid, but never started
    assert stranger.status_code == unknown.status_code == orphan.status_code == 404
    assert stranger.headers["content-type"] == "application/problem+json"
    assert _get(loaded, "/v1/threads/t-1/payments", None).status_code == 401


def test_an_etag_gives_a_304_to_a_participant_and_a_404_to_a_stranger(loaded) -> None:
    tag = _get(loaded, "/v1/threads/t-1/payments", "u-ann").headers["etag"]
    assert _get(loaded, "/v1/threads/t-1/payments", "u-ann", **{"If-None-Match": tag}).status_code == 304
    assert _get(loaded, "/v1/threads/t-1/payments", "u-cat", **{"If-None-Match": tag}).status_code == 404
