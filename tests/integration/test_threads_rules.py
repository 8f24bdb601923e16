"""Each thread rule's Python form (the fold, the reference) and its SQL form (the live ``apply``, the
API's history query) say the same of any message, evaluated by PostgreSQL itself
(``readside.readmodels.threads.rules``): ``from_participant``, ``visible``, ``unread``,
``is_paid`` and ``further`` (the ``thread_reads`` upsert's ``READS_FORWARD``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import reduce

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from readside.readmodels.threads.fold import Message, Started, ThreadState
from readside.readmodels.threads.rules import (
    FROM_PARTICIPANT,
    PAID,
    READS_FORWARD,
    UNREAD,
    VISIBLE,
    from_participant,
    further,
    is_paid,
    sql,
    unread,
    visible,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
CLIENT, PROVIDER = "c-1", "p-1"

times = st.integers(0, 5).map(lambda n: T0 + timedelta(minutes=n))


@st.composite
def messages(draw: st.DrawFn, mid: str) -> Message:
    if draw(st.integers(0, 9)) == 0:  # a delete seen before its create: a deleted stub
        return Message(mid, None, deleted=True)
    sender_type = draw(st.sampled_from(["client", "provider", "system"]))
    return Message(
        mid,
        draw(times),
        sender_id=draw(st.sampled_from([CLIENT, PROVIDER, "stranger", None])),
        sender_type=sender_type,
        visible_to=draw(st.sampled_from(["both", "client", "provider"])),
        system_key=draw(st.sampled_from([None, "payment_received", "new_booking_request"])),
        deleted=draw(st.booleans()),
    )


threads = st.integers(0, 6).flatmap(lambda n: st.tuples(*(messages(f"m{i}") for i in range(n))))
markers = st.none() | st.tuples(times, times)

_NAMES = {"m": "m", "cid": "%(cid)s::text", "pid": "%(pid)s::text", "role": "%(role)s::text",
          "user": "%(user)s::text", "up_to": "%(up_to)s::timestamptz"}
# Each rule as a WHERE clause would take it (NULL is false), per message row.
_EVAL = (
    "SELECT m.message_id, "
    + ", ".join(f"coalesce(({sql(rule, **_NAMES)}), false)" for rule in (FROM_PARTICIPANT, VISIBLE, UNREAD, PAID))
    + " FROM unnest(%(ids)s::text[], %(created)s::timestamptz[], %(senders)s::text[], %(types)s::text[], "
    "%(vis)s::text[], %(keys)s::text[], %(deleted)s::bool[]) "
    "AS m(message_id, created_at, sender_id, sender_type, visible_to, system_key, deleted)"
)


def _stored(ms: tuple[Message, ...]) -> dict[str, list]:
    """The messages as ``thread_messages`` holds them (a deleted stub has only its key and flag)."""
    stub = [m.created_at is None for m in ms]
    return {
        "ids": [m.message_id for m in ms],
        "created": [m.created_at for m in ms],
        "senders": [None if s else m.sender_id for m, s in zip(ms, stub)],
        "types": [None if s else m.sender_type for m, s in zip(ms, stub)],
        "vis": [None if s else m.visible_to for m, s in zip(ms, stub)],
        "keys": [None if s else m.system_key for m, s in zip(ms, stub)],
        "deleted": [m.deleted for m in ms],
    }


def test_message_rules_agree_in_python_and_in_sql(pg_admin_url: str) -> None:
    started = Started(CLIENT, "C", None, PROVIDER, "P", None, None, "live_performance", T0)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:

        @SETTINGS
        @given(threads, st.sampled_from([("client", CLIENT), ("provider", PROVIDER)]), markers, st.booleans())
        def check(ms: tuple[Message, ...], side: tuple[str, str], marker, paid_by_payment: bool) -> None:
            role, user = side
            params = {"cid": CLIENT, "pid": PROVIDER, "role": role, "user": user,
                      "up_to": marker[1] if marker else None, **_stored(ms)}
            got = {mid: rest for mid, *rest in conn.execute(_EVAL, params).fetchall()}
            for m in ms:
                ours, seen, new, paying = got[m.message_id]
                assert ours == from_participant(m, started), m
                assert seen == visible(m, role, started), m
                assert new == unread(m, role, user, marker, started), m
                assert paying == (m.system_key == "payment_received" and not m.deleted and m.created_at is not None
                                  and from_participant(m, started)), m
            state = ThreadState("t-1", started, None, paid_by_payment, {m.message_id: m for m in ms})
            assert is_paid(state) == (paid_by_payment or any(row[3] for row in got.values()))

        check()


def test_read_markers_move_forward_in_python_and_in_the_upsert(pg_admin_url: str) -> None:
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TEMP TABLE thread_reads (thread_id text, user_id text, read_at timestamptz NOT NULL, "
            "read_up_to timestamptz NOT NULL, PRIMARY KEY (thread_id, user_id))"
        )

        @SETTINGS
        @given(st.lists(st.tuples(times, times), min_size=1, max_size=6))
        def check(writes: list[tuple[datetime, datetime]]) -> None:
            conn.execute("TRUNCATE thread_reads")
            for read_at, up_to in writes:
                conn.execute(
                    "INSERT INTO thread_reads VALUES ('t', 'u', %s, %s) ON CONFLICT (thread_id, user_id) "
                    "DO UPDATE SET read_at = excluded.read_at, read_up_to = excluded.read_up_to" + READS_FORWARD,
                    (read_at, up_to),
                )
            stored = conn.execute("SELECT read_at, read_up_to FROM thread_reads").fetchone()
            assert stored == reduce(further, writes, None)

        check()
