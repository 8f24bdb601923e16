"""``readside rebuild --verify``: compare a projection's tables between two schemas, row by row.

Each table is compared on its primary key: every row is reduced to ``md5`` of its text (the
columns both versions have, minus the ``TableCheck.exclude``d ones, only the rows matching
``TableCheck.where``), and the two sides are joined on the key. A key is *missing* (only in the
live version), *extra* (only in the new one) or *changed* (both, different hashes). The database
does the work in one statement per table (a hash join), so the comparison streams nothing but the
differing keys to the client; it reads both tables whole, which is why it runs inside the cutover
transaction only when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from readside.readmodels.base import Projection

__all__ = ["TableDiff", "compare", "report"]

EXAMPLES = 5


@dataclass
class TableDiff:
    table: str
    missing: int = 0
    extra: int = 0
    changed: int = 0
    examples: list[tuple[str, str]] = field(default_factory=list)  # (kind, key as row text)
    columns_only_live: list[str] = field(default_factory=list)
    columns_only_new: list[str] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return bool(self.missing or self.extra or self.changed)


async def _columns(conn: psycopg.AsyncConnection, schema: str, table: str) -> list[str]:
    cur = await conn.execute(
        "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (schema, table),
    )
    return [r[0] for r in await cur.fetchall()]


async def _primary_key(conn: psycopg.AsyncConnection, schema: str, table: str) -> list[str]:
    cur = await conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum "
        "WHERE n.nspname = %s AND c.relname = %s AND i.indisprimary ORDER BY k.ord",
        (schema, table),
    )
    return [r[0] for r in await cur.fetchall()]


async def compare(conn: psycopg.AsyncConnection, projection: Projection, live: str, new: str) -> list[TableDiff]:
    """The differences per table between schema ``live`` and schema ``new`` (tables skipped by
    their check are left out)."""
    out = []
    for table in projection.tables:
        check = projection.check(table)
        if check.skip:
            continue
        live_cols, new_cols = await _columns(conn, live, table), await _columns(conn, new, table)
        diff = TableDiff(
            table,
            columns_only_live=[c for c in live_cols if c not in new_cols],
            columns_only_new=[c for c in new_cols if c not in live_cols],
        )
        key = await _primary_key(conn, new, table) or await _primary_key(conn, live, table)
        cols = [c for c in live_cols if c in new_cols and c not in check.exclude]
        where = sql.SQL(" WHERE " + check.where) if check.where else sql.SQL("")  # trusted: from the projection

        def side(schema: str, key: list[str] = key, cols: list[str] = cols, table: str = table,
                 where: sql.Composable = where) -> sql.Composed:
            return sql.SQL("SELECT ROW({k})::text AS k, md5(ROW({c})::text) AS h FROM {t}{w}").format(
                k=sql.SQL(", ").join(map(sql.Identifier, key)),
                c=sql.SQL(", ").join(map(sql.Identifier, cols)),
                t=sql.Identifier(schema, table),
                w=where,
            )

        cur = await conn.execute(
            sql.SQL(
                "SELECT CASE WHEN b.k IS NULL THEN 'missing' WHEN a.k IS NULL THEN 'extra' ELSE 'changed' END, "
                "coalesce(a.k, b.k) FROM ({a}) a FULL JOIN ({b}) b ON a.k = b.k "
                "WHERE a.h IS DISTINCT FROM b.h ORDER BY 2"
            ).format(a=side(live), b=side(new))
        )
        for kind, k in await cur.fetchall():
            setattr(diff, kind, getattr(diff, kind) + 1)
            if len(diff.examples) < EXAMPLES:
                diff.examples.append((kind, k))
        out.append(diff)
    return out


def report(diffs: list[TableDiff]) -> str:
    """Human-readable lines: one per table, then the example keys of the differing ones."""
    lines = []
    for d in diffs:
        columns = (
            f"columns only in live: {d.columns_only_live}; only in new: {d.columns_only_new}"
            if d.columns_only_live or d.columns_only_new
            else ""
        )
        if not d.differs:
            lines.append(f"  {d.table}: same" + (f" ({columns})" if columns else ""))
            continue
        lines.append(f"  {d.table}: DIFFERS — {d.changed} changed, {d.missing} only in live, {d.extra} only in new")
        for kind, key in d.examples:
            lines.append(f"      {kind:<8} key {key}")
        if columns:
            lines.append(f"      {columns}")
    return "\n".join(lines)
