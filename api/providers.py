"""``GET /v1/providers`` (public): one category's active providers, in one of three orders.

Parameters: ``category`` (normalized as profiles are; absent: all categories), ``sort``
(``most_booked`` default, ``top_rated``, ``newest``), ``limit`` 1..50 (default 12), ``cursor``,
``fields`` (comma list from ``FIELDS``, trimmed, case-sensitive; empty: all; ``id`` always).
Unknown parameters or fields are a 400. No token needed; ``Cache-Control: public, max-age=30``.
The weak ETag comes from the listing's version (``listing_versions``, or the cache's copy of
it), so a 304 costs one primary-key lookup or one cache GET.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.responses import Response

from readside.api.cursors import position_decimal, position_id, position_int
from readside.api.http import PUBLIC, Context, Timing
from readside.api.openapi import BOOLEAN, CURSOR, INTEGER, STRING, TIME, Operation, array, documented, nullable, obj
from readside.api.params import Choice, Integer, Query, Text, names
from readside.api.problems import bad_param
from readside.api.serving import Spec, serve
from readside.readmodels.providers import queries
from readside.readmodels.providers.fold import FIELDS, normalize_category
from readside.readmodels.providers.scopes import listing_key
from readside.shared.jsonbytes import dumps, loads

__all__ = ["list_providers", "parse_fields"]

SORTS = ("most_booked", "top_rated", "newest")
CATEGORY = Text("category", "normalized as profiles are (trimmed, lower case, runs of spaces or hyphens become one "
                            "`_`); absent: all categories")
SORT = Choice("sort", "`most_booked` (book_count desc), `top_rated` (mean rating desc), `newest` (created_at desc); "
                      "ties by id", SORTS, "most_booked")
LIMIT = Integer("limit", "items per page", 12, 1, 50)
CURSOR_PARAM = Text("cursor", "the `next_cursor` of the previous page (same other parameters)")
FIELDS_PARAM = Text("fields", f"comma list of: {', '.join(FIELDS)} (`id` always; empty: all)")
PARAMS = (CATEGORY, SORT, LIMIT, CURSOR_PARAM, FIELDS_PARAM)
_FIELD_SCHEMAS = {
    "id": STRING, "business_name": nullable(STRING), "avatar_url": nullable(STRING), "category": STRING,
    "location": nullable(STRING), "hourly_rate_cents": nullable(INTEGER), "price_visible": BOOLEAN,
    "custom_subtitle": nullable(STRING), "rating_avg": nullable({"type": "number"}), "rating_count": INTEGER,
    "book_count": INTEGER, "created_at": TIME, "updated_at": TIME,
}
BODY = obj({
    "items": array(obj({f: _FIELD_SCHEMAS[f] for f in FIELDS}, optional=tuple(f for f in FIELDS if f != "id"),
                       open_=False)),
    "next_cursor": CURSOR,
    "total": INTEGER,
})


def parse_fields(raw: str | None) -> tuple[str, ...] | None:
    """The chosen fields in serving order (``id`` first), or None for all of them."""
    if raw is None:
        return None
    names = {part.strip() for part in raw.split(",")} - {""}
    unknown = sorted(names - set(FIELDS))
    if unknown:
        raise bad_param(f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(FIELDS)}")
    if not names or names >= set(FIELDS) - {"id"}:
        return None
    return tuple(f for f in FIELDS if f == "id" or f in names)


def _position(raw: list[Any], sort: str) -> tuple[Any, ...]:
    """A decoded cursor back into ``(sort keys..., provider_id)``; anything else is a 400."""
    kinds = [t for _, t in queries.ORDERS[sort]]
    if len(raw) != len(kinds) + 1:
        raise bad_param("cursor is not valid")
    values = [position_decimal(v) if kind == "numeric" else position_int(v) for v, kind in zip(raw, kinds, strict=False)]
    return (*values, position_id(raw[-1]))


def _encode_keys(keys: tuple[Any, ...]) -> list[Any]:
    return [str(k) if isinstance(k, Decimal) else k for k in keys]


@documented(Operation("Active providers of one category (public)", params=PARAMS, auth=None, body=BODY,
                       listing=True, cache_control="public, max-age=30"))
async def list_providers(request: Request, ctx: Context, timing: Timing) -> Response:
    q = Query(request, names(PARAMS))
    raw_category, sort, limit = CATEGORY.read(q), SORT.value(q), LIMIT.value(q)
    cursor, raw_fields = CURSOR_PARAM.read(q), FIELDS_PARAM.read(q)
    category = normalize_category(raw_category) if raw_category is not None else None
    fields = parse_fields(raw_fields)
    key = listing_key(category)
    bound = "\x1f".join(
        ("providers", "all" if category is None else "c:" + category, sort, str(limit), ",".join(fields or ("*",)))
    )
    after = _position(ctx.cursors.decode(bound, cursor), sort) if cursor else None

    async def render(conn: psycopg.AsyncConnection) -> tuple[int, int, bytes]:
        gen, version, total, (items, (*keys, pid), more) = await queries.provider_page(
            conn, key, category, sort, after, limit, joined=fields is None
        )
        next_cursor = ctx.cursors.encode(bound, [*_encode_keys(tuple(keys)), pid]) if more else None
        if fields is not None:  # the chosen fields of each item
            items = b",".join(dumps({f: full[f] for f in fields}) for full in map(loads, items or ()))  # type: ignore[arg-type]
        body = (
            b'{"items":[' + items + b'],"next_cursor":' + dumps(next_cursor)
            + b',"total":' + str(total).encode() + b"}"
        )
        return gen, version, body

    return await serve(
        request, ctx, timing,
        Spec("providers", key, f"{bound}\x1f{cursor or ''}", render,
             lambda conn: queries.listing_version(conn, key), PUBLIC, vary=False),
    )
