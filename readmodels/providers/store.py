"""Provider listing read model, the storage side: DDL and the set-based ``apply`` of one batch.

Tables (ids ``COLLATE "C"``):
- ``providers``          one row per provider (a stub until its first profile snapshot): the
                         latest snapshot, ``created_at``, the counters (``book_count``,
                         ``rating_sum``, ``rating_count``) and the precomputed card — ``listed``,
                         ``category_key``, the ascending sort keys and the item as ready JSON bytes.
                         One partial index (``WHERE listed``) per order, with and without the
                         category, so every page is one index range scan.
- ``provider_bookings``  the ``booking_id``s counted (once per business key, any ``event_id``).
- ``provider_reviews``   the review counted per ``review_id``: ``(posted_at, rating)``.
- ``provider_counts``    listed providers per listing key, kept by deltas in the batch transaction:
                         ``providers`` (all categories) and ``providers:<category_key>``.
- ``listing_versions``   per listing key, bumped whenever a listed card of that listing changes
                         (ETags: a 304 costs one primary-key lookup).
- ``provider_avatars``   the image of a latest snapshot's ``data:`` avatar (``avatars.store``),
                         written when the snapshot's ``avatar_url`` changes; served by
                         ``GET /v1/img/avatar/{id}``.

``apply`` locks the touched ``providers`` rows in id order, loads each table once — the
bookings and reviews by the exact ``(provider_id, id)`` pairs the batch names, never a popular
provider's whole history — folds in memory with ``fold.fold_into`` and writes each table
back with one statement. It returns the listing keys it bumped (``scopes``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import psycopg

from readside.readmodels.avatars.store import PROVIDER_DDL, write_provider_avatars
from readside.readmodels.base import Projection, TableCheck
from readside.readmodels.providers import scopes
from readside.readmodels.providers.fold import Card, Profile, ProviderState, fold_into, render
from readside.readmodels.providers.scopes import ALL_KEY, listing_key
from readside.schemas import BookingConfirmed, Event, ReviewPosted
from readside.shared.jsonbytes import dumps

__all__ = ["DDL", "PROJECTION", "apply"]


DDL = """
CREATE TABLE IF NOT EXISTS providers (
    provider_id text COLLATE "C" PRIMARY KEY,
    business_name text, avatar_url text, category text, location text,
    hourly_rate_cents int8, price_visible bool, custom_subtitle text, status text,
    updated_at timestamptz,
    created_at timestamptz,
    book_count int8 NOT NULL DEFAULT 0,
    rating_sum int8 NOT NULL DEFAULT 0,
    rating_count int8 NOT NULL DEFAULT 0,
    listed bool NOT NULL DEFAULT false,
    category_key text COLLATE "C",
    booked_key int8, newest_key int8, rated_key numeric, rated_count_key int8,
    item bytea
);
CREATE INDEX IF NOT EXISTS providers_most_booked ON providers (category_key, booked_key, provider_id) WHERE listed;
CREATE INDEX IF NOT EXISTS providers_most_booked_all ON providers (booked_key, provider_id) WHERE listed;
CREATE INDEX IF NOT EXISTS providers_newest ON providers (category_key, newest_key, provider_id) WHERE listed;
CREATE INDEX IF NOT EXISTS providers_newest_all ON providers (newest_key, provider_id) WHERE listed;
CREATE INDEX IF NOT EXISTS providers_top_rated
    ON providers (category_key, rated_key, rated_count_key, provider_id) WHERE listed;
CREATE INDEX IF NOT EXISTS providers_top_rated_all ON providers (rated_key, rated_count_key, provider_id) WHERE listed;
CREATE TABLE IF NOT EXISTS provider_bookings (
    provider_id text COLLATE "C" NOT NULL,
    booking_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (provider_id, booking_id)
);
CREATE TABLE IF NOT EXISTS provider_reviews (
    provider_id text COLLATE "C" NOT NULL,
    review_id text COLLATE "C" NOT NULL,
    posted_at timestamptz NOT NULL,
    rating int4 NOT NULL,
    PRIMARY KEY (provider_id, review_id)
);
CREATE TABLE IF NOT EXISTS provider_counts (
    key text COLLATE "C" PRIMARY KEY,
    listed int8 NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS listing_versions (
    key text COLLATE "C" PRIMARY KEY,
    version int8 NOT NULL DEFAULT 0
);
""" + PROVIDER_DDL

_PROFILE_COLS = (
    "business_name, avatar_url, category, location, hourly_rate_cents, price_visible, custom_subtitle, status, updated_at"
)
_CARD_COLS = "listed, category_key, booked_key, newest_key, rated_key, rated_count_key, item"
_SCALAR_COLS = f"{_PROFILE_COLS}, created_at, book_count, rating_sum, rating_count"

# A row as stored, in _SCALAR_COLS then _CARD_COLS order (after provider_id).
Row = tuple[Any, ...]
_CARD_AT = 13  # index of `listed` in a Row


def _row(state: ProviderState, card: Card | None) -> Row:
    p = state.profile
    profile = (
        (p.business_name, p.avatar_url, p.category, p.location, p.hourly_rate_cents, p.price_visible,
         p.custom_subtitle, p.status, p.updated_at)
        if p is not None
        else (None,) * 9
    )
    scalars = (state.created_at, state.book_count, state.rating_sum, state.rating_count)
    if card is None:
        return (*profile, *scalars, False, None, None, None, None, None, None)
    return (
        *profile,
        *scalars,
        card.listed,
        card.category_key,
        card.booked_key,
        card.newest_key,
        card.rated_key,
        card.rated_count_key,
        dumps(card.item),
    )


async def _load(conn: psycopg.AsyncConnection, pids: list[str]) -> tuple[dict[str, ProviderState], dict[str, Row]]:
    cur = await conn.execute(
        f"SELECT provider_id, {_SCALAR_COLS}, {_CARD_COLS} FROM providers "
        "WHERE provider_id = ANY(%b::text[]) ORDER BY provider_id FOR UPDATE",
        (pids,),
    )
    states = {pid: ProviderState(pid) for pid in pids}
    old: dict[str, Row] = {}
    for pid, *row in await cur.fetchall():
        if row[-1] is not None:
            row[-1] = bytes(row[-1])
        old[pid] = tuple(row)
        profile = Profile(*row[:9]) if row[8] is not None else None
        created, books, rsum, rcount = row[9:13]
        states[pid] = ProviderState(pid, profile, created, books, rsum, rcount)
    return states, old


async def _load_seen(
    conn: psycopg.AsyncConnection,
    states: dict[str, ProviderState],
    bookings: set[tuple[str, str]],
    reviews: set[tuple[str, str]],
) -> tuple[set[tuple[str, str]], dict[tuple[str, str], tuple]]:
    """The bookings and reviews already counted, among the ``(provider, id)`` pairs the batch names."""
    seen_bookings: set[tuple[str, str]] = set()
    seen_reviews: dict[tuple[str, str], tuple] = {}
    if bookings:
        keys = sorted(bookings)
        cur = await conn.execute(
            "SELECT b.provider_id, b.booking_id FROM provider_bookings b "
            "JOIN unnest(%b::text[], %b::text[]) AS u(p, k) ON b.provider_id = u.p AND b.booking_id = u.k",
            ([p for p, _ in keys], [k for _, k in keys]),
        )
        for pid, bid in await cur.fetchall():
            seen_bookings.add((pid, bid))
            states[pid].bookings.add(bid)
    if reviews:
        keys = sorted(reviews)
        cur = await conn.execute(
            "SELECT r.provider_id, r.review_id, r.posted_at, r.rating FROM provider_reviews r "
            "JOIN unnest(%b::text[], %b::text[]) AS u(p, k) ON r.provider_id = u.p AND r.review_id = u.k",
            ([p for p, _ in keys], [k for _, k in keys]),
        )
        for pid, rid, posted_at, rating in await cur.fetchall():
            seen_reviews[(pid, rid)] = (posted_at, rating)
            states[pid].reviews[rid] = (posted_at, rating)
    return seen_bookings, seen_reviews


async def apply(conn: psycopg.AsyncConnection, events: Sequence[Event]) -> set[str]:
    pids = sorted({e.payload.provider_id for e in events})  # type: ignore[attr-defined]
    states, old = await _load(conn, pids)
    bookings = {(e.payload.provider_id, e.payload.booking_id) for e in events if isinstance(e.payload, BookingConfirmed)}
    reviews = {(e.payload.provider_id, e.payload.review_id) for e in events if isinstance(e.payload, ReviewPosted)}
    seen_bookings, seen_reviews = await _load_seen(conn, states, bookings, reviews)
    for event in events:
        fold_into(states[event.payload.provider_id], event)  # type: ignore[attr-defined]

    new_bookings = sorted(bookings - seen_bookings)
    changed_reviews = sorted(k for k in reviews if states[k[0]].reviews.get(k[1]) != seen_reviews.get(k))
    rows: dict[str, Row] = {}
    for pid in pids:
        row = _row(states[pid], render(states[pid]))
        if row != old.get(pid):
            rows[pid] = row
    await _write_providers(conn, rows)
    await write_provider_avatars(conn, {
        pid: row[1] for pid, row in rows.items() if pid not in old or old[pid][1] != row[1]  # avatar_url moved
    })
    await _write_bookings(conn, new_bookings)
    await _write_reviews(conn, states, changed_reviews)
    return await _write_listings(conn, {pid: (old.get(pid), row) for pid, row in rows.items()})


async def _write_providers(conn: psycopg.AsyncConnection, rows: dict[str, Row]) -> None:
    if not rows:
        return
    pids = sorted(rows)
    cols = list(zip(*(rows[p] for p in pids), strict=True))
    types = (
        "text", "text", "text", "text", "int8", "bool", "text", "text", "timestamptz",  # profile
        "timestamptz", "int8", "int8", "int8",  # created_at, counters
        "bool", "text", "int8", "int8", "numeric", "int8", "bytea",  # card
    )
    names = f"{_SCALAR_COLS}, {_CARD_COLS}".split(", ")
    await conn.execute(
        f"INSERT INTO providers (provider_id, {', '.join(names)}) "
        f"SELECT * FROM unnest(%b::text[], {', '.join(f'%b::{t}[]' for t in types)}) "
        f"ON CONFLICT (provider_id) DO UPDATE SET {', '.join(f'{n} = excluded.{n}' for n in names)}",
        (pids, *[list(c) for c in cols]),
    )


async def _write_bookings(conn: psycopg.AsyncConnection, keys: list[tuple[str, str]]) -> None:
    if keys:
        await conn.execute(
            "INSERT INTO provider_bookings (provider_id, booking_id) "
            "SELECT * FROM unnest(%b::text[], %b::text[]) ON CONFLICT DO NOTHING",
            ([p for p, _ in keys], [b for _, b in keys]),
        )


async def _write_reviews(
    conn: psycopg.AsyncConnection, states: dict[str, ProviderState], keys: list[tuple[str, str]]
) -> None:
    if keys:
        values = [states[p].reviews[r] for p, r in keys]
        await conn.execute(
            "INSERT INTO provider_reviews (provider_id, review_id, posted_at, rating) "
            "SELECT * FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::int4[]) "
            "ON CONFLICT (provider_id, review_id) DO UPDATE SET posted_at = excluded.posted_at, rating = excluded.rating",
            ([p for p, _ in keys], [r for _, r in keys], [v[0] for v in values], [v[1] for v in values]),
        )


def _listing(row: Row | None) -> tuple[bool, str | None]:
    return (bool(row[_CARD_AT]), row[_CARD_AT + 1]) if row is not None else (False, None)


async def _write_listings(conn: psycopg.AsyncConnection, changes: dict[str, tuple[Row | None, Row]]) -> set[str]:
    """Counter deltas and version bumps for the listings whose listed cards changed."""
    deltas: dict[str, int] = defaultdict(int)
    bumped: set[str] = set()
    for before, after in changes.values():
        if before is not None and before[_CARD_AT:] == after[_CARD_AT:]:
            continue  # only the stub's counters moved: no card changed
        (was, old_cat), (now, new_cat) = _listing(before), _listing(after)
        if was:
            deltas[listing_key(old_cat)] -= 1
            deltas[ALL_KEY] -= 1
            bumped |= {listing_key(old_cat), ALL_KEY}
        if now:
            deltas[listing_key(new_cat)] += 1
            deltas[ALL_KEY] += 1
            bumped |= {listing_key(new_cat), ALL_KEY}
    keys = sorted(k for k, d in deltas.items() if d)
    if keys:
        await conn.execute(
            "INSERT INTO provider_counts (key, listed) SELECT * FROM unnest(%b::text[], %b::int8[]) "
            "ON CONFLICT (key) DO UPDATE SET listed = provider_counts.listed + excluded.listed",
            (keys, [deltas[k] for k in keys]),
        )
    if bumped:
        await conn.execute(
            "INSERT INTO listing_versions (key, version) SELECT unnest(%b::text[]), 1 "
            "ON CONFLICT (key) DO UPDATE SET version = listing_versions.version + 1",
            (sorted(bumped),),
        )
    return bumped


PROJECTION = Projection(
    name="providers",
    version=1,
    topics=("providers.events",),
    event_types=frozenset({"provider.profile_updated", "booking.confirmed", "review.posted"}),
    ddl=DDL,
    apply=apply,
    tables=("providers", "provider_bookings", "provider_reviews", "provider_counts", "listing_versions", "provider_avatars"),
    checks=(TableCheck("provider_counts", where="listed <> 0"), TableCheck("listing_versions", skip=True)),
    scopes=scopes.SCOPES,
)
