"""Payments per thread, the storage side: DDL and the set-based ``apply`` of one batch.

Tables (ids ``COLLATE "C"``):
- ``thread_payments``        one row per ``(thread_id, payment_id)``: the first event for a
                             payment id (``fold``), never updated;
- ``thread_payment_totals``  one row per thread with payments: ``item``, the ready JSON the API
                             serves (``fold.render``), and ``version``, bumped when it changes (ETags).

``apply`` loads the batch's threads (totals rows locked in key order, ARCHITECTURE invariant 5),
folds in memory, inserts the new payments and rewrites the totals of the threads that got one.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from readside.readmodels.base import Projection, TableCheck
from readside.readmodels.payments import scopes
from readside.readmodels.payments.fold import Payment, ThreadPayments, fold_into, render
from readside.schemas import Event
from readside.shared.jsonbytes import dumps

__all__ = ["DDL", "PROJECTION", "apply"]

DDL = """
CREATE TABLE IF NOT EXISTS thread_payments (
    thread_id text COLLATE "C" NOT NULL,
    payment_id text COLLATE "C" NOT NULL,
    amount_cents int8 NOT NULL,
    currency text NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (thread_id, payment_id)
);
CREATE TABLE IF NOT EXISTS thread_payment_totals (
    thread_id text COLLATE "C" PRIMARY KEY,
    version int8 NOT NULL DEFAULT 0,
    item bytea NOT NULL
);
"""


async def _load(conn: psycopg.AsyncConnection, thread_ids: list[str]) -> dict[str, ThreadPayments]:
    await conn.execute(
        "SELECT 1 FROM thread_payment_totals WHERE thread_id = ANY(%b::text[]) ORDER BY thread_id FOR UPDATE",
        (thread_ids,),
    )
    cur = await conn.execute(
        "SELECT thread_id, payment_id, amount_cents, currency, received_at FROM thread_payments "
        "WHERE thread_id = ANY(%b::text[])",
        (thread_ids,),
    )
    states = {tid: ThreadPayments(tid) for tid in thread_ids}
    for tid, pid, cents, currency, received_at in await cur.fetchall():
        states[tid].payments[pid] = Payment(pid, cents, currency, received_at)
    return states


async def apply(conn: psycopg.AsyncConnection, events: Sequence[Event]) -> set[str]:
    thread_ids = sorted({e.payload.thread_id for e in events})  # type: ignore[attr-defined]
    states = await _load(conn, thread_ids)
    before = {tid: set(state.payments) for tid, state in states.items()}
    for event in events:
        fold_into(states[event.payload.thread_id], event)  # type: ignore[attr-defined]
    new = [(tid, p) for tid in thread_ids for pid, p in states[tid].payments.items() if pid not in before[tid]]
    if not new:
        return set()
    await conn.execute(
        "INSERT INTO thread_payments (thread_id, payment_id, amount_cents, currency, received_at) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::int8[], %b::text[], %b::timestamptz[])",
        (
            [tid for tid, _ in new], [p.payment_id for _, p in new], [p.amount_cents for _, p in new],
            [p.currency for _, p in new], [p.received_at for _, p in new],
        ),
    )
    changed = sorted({tid for tid, _ in new})
    await conn.execute(
        "INSERT INTO thread_payment_totals (thread_id, version, item) "
        "SELECT t, 1, i FROM unnest(%b::text[], %b::bytea[]) AS u(t, i) "
        "ON CONFLICT (thread_id) DO UPDATE SET item = excluded.item, "
        "version = thread_payment_totals.version + 1",
        (changed, [dumps(render(states[tid])) for tid in changed]),
    )
    return {scopes.thread_key(tid) for tid in changed}


PROJECTION = Projection(
    name="payments",
    version=1,
    topics=("payments.events",),
    event_types=frozenset({"payment.received"}),
    ddl=DDL,
    apply=apply,
    tables=("thread_payments", "thread_payment_totals"),
    checks=(TableCheck("thread_payment_totals", exclude=("version",)),),
    scopes=scopes.SCOPES,
)
