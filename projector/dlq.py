"""Dead letters: list, show, replay (``readside dlq``).

The ``dead_letters`` table holds every record a projection could not apply: the original bytes
(``value`` NULL for a tombstone), the origin (topic, partition, offset), the reason. The
``<topic>.dlq`` topics hold the same records for other consumers — except one too large for the
topic, announced there by a small pointer record (``readside.projector.engine.pointer``); the table keeps
it whole. Replay reads the table, which is exactly-once.

**Replay** re-decodes each selected dead letter with today's schemas (a deployed upcaster, a
relaxed model) and:

- one that decodes and its projection handles is applied through the projection's ``apply``,
  in one transaction with the ``dedupe`` table and the removal of its dead letter — an event the
  projector applied meanwhile (a producer re-sent it), an earlier replay applied, or that two
  dead letters share, is applied once and counted as a duplicate;
- one whose type is now unknown to the projection is dropped, as the projector would skip it;
- one that still fails (decoding, or the fold — a ``DataError``, a ``ProgramLimitExceeded``... as
  the projector classifies them, ``readside.shared.errors.record_fault``) stays, with the new reason and
  ``retries + 1``; an unavailable database stops the replay (what committed stays done).

Dead letters are taken ``FOR UPDATE SKIP LOCKED``, so two replays never apply one twice. After
each commit the cache versions of what changed are bumped, as the projector does. Folds here are
order-independent (they keep the latest payload time), so a late replay gives the rows an
in-order arrival would have given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import orjson
import psycopg

from readside.readmodels.base import Projection
from readside.readmodels.registry import REGISTRY
from readside.schemas import Event, InvalidEvent, UnknownEvent, decode
from readside.schemas.envelope import clean_reason
from readside.shared.cache import Cache, CacheDown
from readside.shared.errors import record_fault
from readside.shared.settings import Settings
from readside.shared.table import ago, format_table

__all__ = ["DeadLetter", "ReplayResult", "get", "list_dead_letters", "render_list", "render_show", "replay", "show_json"]

log = logging.getLogger(__name__)

CHUNK = 500
_COLUMNS = 'id, projection, topic, partition, "offset", key, value, reason, created_at, retries, retried_at'


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    projection: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None  # None: a tombstone
    reason: str
    created_at: datetime
    retries: int
    retried_at: datetime | None

    @classmethod
    def of(cls, row: Sequence[Any]) -> DeadLetter:
        i, projection, topic, partition, offset, key, value, reason, created, retries, retried = row
        return cls(i, projection, topic, partition, offset, None if key is None else bytes(key),
                   None if value is None else bytes(value), reason, created, retries, retried)

    @property
    def origin(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


async def list_dead_letters(conn: psycopg.AsyncConnection, projection: str | None = None, limit: int = 50) -> tuple[list[DeadLetter], int]:
    """The newest ``limit`` dead letters (of one projection), and how many there are in all."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM dead_letters WHERE %(p)s::text IS NULL OR projection = %(p)s "
        "ORDER BY id DESC LIMIT %(n)s",
        {"p": projection, "n": limit},
    )
    rows = [DeadLetter.of(r) for r in await cur.fetchall()]
    cur = await conn.execute("SELECT count(*) FROM dead_letters WHERE %(p)s::text IS NULL OR projection = %(p)s", {"p": projection})
    (total,) = await cur.fetchone()  # type: ignore[misc]
    return rows, total


async def get(conn: psycopg.AsyncConnection, dead_letter_id: int) -> DeadLetter | None:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM dead_letters WHERE id = %s", (dead_letter_id,))
    row = await cur.fetchone()
    return None if row is None else DeadLetter.of(row)


# -- replay ------------------------------------------------------------------------------------

@dataclass
class ReplayResult:
    replayed: int = 0
    duplicates: int = 0
    ignored: int = 0  # decoded to a type the projection no longer handles: dropped, as live
    failing: list[tuple[DeadLetter, str]] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)  # ids asked for: not there, or another replay has them
    cache_error: str | None = None

    @property
    def done(self) -> int:
        return self.replayed + self.duplicates + self.ignored + len(self.failing)


@dataclass(frozen=True, slots=True)
class _Ready:
    letter: DeadLetter
    event: Event


def _decode(letter: DeadLetter, prefix: str) -> Event | UnknownEvent | str:
    """The event, an unknown one, or why the dead letter still fails."""
    projection = REGISTRY.get(letter.projection)
    if projection is None:
        return f"projection {letter.projection!r} is not in this version (known: {', '.join(sorted(REGISTRY))})"
    base = letter.topic[len(prefix):] if prefix and letter.topic.startswith(prefix) else letter.topic
    try:
        decoded = decode(base, letter.key, letter.value)
    except InvalidEvent as exc:
        return exc.reason
    except ValueError:
        return f"topic {letter.topic!r} is not a contract topic under READSIDE_TOPIC_PREFIX={prefix!r}"
    if isinstance(decoded, Event) and not projection.handles(decoded.type):
        return UnknownEvent(decoded.event_id, decoded.type)
    return decoded


async def _claim(conn: psycopg.AsyncConnection, ids: list[int] | None, after: int, projection: str | None) -> list[DeadLetter]:
    if ids is not None:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM dead_letters WHERE id = ANY(%(ids)s) AND (%(p)s::text IS NULL OR projection = %(p)s) "
            "ORDER BY id FOR UPDATE SKIP LOCKED",
            {"ids": ids, "p": projection},
        )
    else:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM dead_letters WHERE id > %(after)s AND (%(p)s::text IS NULL OR projection = %(p)s) "
            "ORDER BY id LIMIT %(n)s FOR UPDATE SKIP LOCKED",
            {"after": after, "p": projection, "n": CHUNK},
        )
    return [DeadLetter.of(r) for r in await cur.fetchall()]


async def _new_ids(conn: psycopg.AsyncConnection, projection: str, event_ids: list[str]) -> set[str]:
    cur = await conn.execute(
        "INSERT INTO dedupe (projection, event_id) SELECT %s, unnest(%b::text[]) ON CONFLICT DO NOTHING RETURNING event_id",
        (projection, sorted(event_ids)),
    )
    return {row[0] for row in await cur.fetchall()}


async def _apply(
    conn: psycopg.AsyncConnection, projection: Projection, ready: list[_Ready], result: ReplayResult,
    failing: list[tuple[DeadLetter, str]], changed: set[str],
) -> list[DeadLetter]:
    """Apply ``ready`` (one projection) with dedupe; returns the dead letters done with.

    Dead letters of one event (a producer re-sent it) share its fate: applied once (the others
    are duplicates), or all still failing. The whole lot goes in one savepoint first
    (set-based, as the projector writes); if the fold raises, one savepoint per event isolates
    the culprits — their dedupe records roll back with them, so a later fix can replay them.
    """
    groups: dict[str, list[DeadLetter]] = {}
    events: dict[str, Event] = {}
    for item in ready:
        groups.setdefault(item.event.event_id, []).append(item.letter)
        events.setdefault(item.event.event_id, item.event)

    def applied(eid: str, fresh: bool) -> list[DeadLetter]:
        result.replayed += int(fresh)
        result.duplicates += len(groups[eid]) - int(fresh)
        return groups[eid]

    try:
        async with conn.transaction():
            new = await _new_ids(conn, projection.name, list(events))
            if new:
                changed |= await projection.apply(conn, [e for eid, e in events.items() if eid in new])
        return [d for eid in events for d in applied(eid, eid in new)]
    except Exception as exc:  # noqa: BLE001 - the events' fault: isolated below, one event at a time
        if not record_fault(exc):
            raise
        log.info("replay of %d %s event(s) failed as a whole; isolating", len(events), projection.name)
    done: list[DeadLetter] = []
    for eid, event in events.items():
        try:
            async with conn.transaction():
                fresh = bool(await _new_ids(conn, projection.name, [eid]))
                if fresh:
                    changed |= await projection.apply(conn, [event])
            done += applied(eid, fresh)
        except Exception as exc:  # noqa: BLE001 - still poison: it stays, with the reason
            if not record_fault(exc):
                raise
            failing += [(d, clean_reason(f"fold error: {exc!r}")) for d in groups[eid]]
    return done


async def _replay_chunk(conn: psycopg.AsyncConnection, letters: list[DeadLetter], prefix: str, result: ReplayResult) -> set[str]:
    failing: list[tuple[DeadLetter, str]] = []
    done: list[DeadLetter] = []
    ready: dict[str, list[_Ready]] = {}
    changed: set[str] = set()
    for letter in letters:
        decoded = _decode(letter, prefix)
        if isinstance(decoded, str):
            failing.append((letter, decoded))
        elif isinstance(decoded, UnknownEvent):
            result.ignored += 1
            done.append(letter)
        else:
            ready.setdefault(letter.projection, []).append(_Ready(letter, decoded))
    for name in sorted(ready):
        done += await _apply(conn, REGISTRY[name], ready[name], result, failing, changed)
    if done:
        await conn.execute("DELETE FROM dead_letters WHERE id = ANY(%b::int8[])", ([d.id for d in done],))
    if failing:
        await conn.execute(
            "UPDATE dead_letters d SET reason = u.reason, retries = d.retries + 1, retried_at = now() "
            "FROM unnest(%b::int8[], %b::text[]) AS u(id, reason) WHERE d.id = u.id",
            ([d.id for d, _ in failing], [r for _, r in failing]),
        )
    result.failing += failing
    return changed


async def replay(
    pool: Any,
    settings: Settings,
    *,
    ids: Sequence[int] | None = None,
    projection: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Replay the dead letters ``ids`` (or all, with ``ids=None``), optionally of one projection.

    ``pool`` is anything with an async ``connection()`` context. ``progress(done, total)`` is
    called after each committed chunk of up to 500.
    """
    result = ReplayResult()
    async with pool.connection() as conn:
        if ids is not None:
            cur = await conn.execute(
                "SELECT id FROM dead_letters WHERE id = ANY(%(ids)s) AND (%(p)s::text IS NULL OR projection = %(p)s)",
                {"ids": list(ids), "p": projection},
            )
            present = {row[0] for row in await cur.fetchall()}
            result.missing = [i for i in dict.fromkeys(ids) if i not in present]
            total = len(present)
            chunks: list[list[int]] | None = [sorted(present)[i : i + CHUNK] for i in range(0, len(present), CHUNK)]
        else:
            cur = await conn.execute(
                "SELECT count(*) FROM dead_letters WHERE %(p)s::text IS NULL OR projection = %(p)s", {"p": projection}
            )
            (total,) = await cur.fetchone()  # type: ignore[misc]
            chunks = None
        cache = Cache(settings.redis_url) if settings.redis_url else None
        try:
            after = 0
            while True:
                chunk_ids = None
                if chunks is not None:
                    if not chunks:
                        break
                    chunk_ids = chunks.pop(0)
                async with conn.transaction():
                    letters = await _claim(conn, chunk_ids, after, projection)
                    if not letters and chunk_ids is None:
                        break
                    changed = await _replay_chunk(conn, letters, settings.topic_prefix, result)
                if chunk_ids is not None:  # taken meanwhile by another replay (locked) or gone
                    claimed = {d.id for d in letters}
                    result.missing += [i for i in chunk_ids if i not in claimed]
                if letters:
                    after = letters[-1].id
                if cache is not None and changed:
                    try:
                        await cache.bump(changed)
                    except CacheDown as exc:
                        result.cache_error = f"{exc.__cause__ or exc}"
                if progress is not None:
                    progress(result.done, total)
        finally:
            if cache is not None:
                await cache.close()
    return result


# -- rendering -----------------------------------------------------------------------------------

def _size(d: DeadLetter) -> int:
    return 0 if d.value is None else len(d.value)


def _escaped(data: bytes) -> str:
    """UTF-8 text as is; other bytes as ``\\xNN``, control characters escaped."""
    text = data.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _age(at: datetime | None) -> float | None:
    return None if at is None else max((datetime.now(timezone.utc) - at).total_seconds(), 0.0)


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render_list(letters: list[DeadLetter], total: int, projection: str | None) -> str:
    if not letters:
        return "no dead letters" + (f" for {projection}" if projection else "")
    rows = [
        [d.id, d.projection, d.origin, "-" if d.key is None else _one_line(_escaped(d.key), 24),
         "tombstone" if d.value is None else len(d.value),
         d.retries, ago(_age(d.created_at)), _one_line(d.reason, 70)]
        for d in letters
    ]
    table = format_table(["ID", "PROJECTION", "ORIGIN", "KEY", "BYTES", "RETRIES", "RECORDED", "REASON"], rows, right=(0, 4, 5))
    shown = f"{len(letters)} of {total}" if total > len(letters) else f"{total}"
    return f"{table}\n\n{shown} dead letter(s), newest first; `readside dlq show <id>` for one, `readside dlq replay` after a fix"


def show_json(d: DeadLetter) -> dict[str, Any]:
    """One dead letter as JSON; a tombstone has ``tombstone: true`` and null ``value_*``."""
    try:
        value_json: Any = None if d.value is None else orjson.loads(d.value)
    except orjson.JSONDecodeError:
        value_json = None
    return {
        "id": d.id, "projection": d.projection, "topic": d.topic, "partition": d.partition, "offset": d.offset,
        "key": None if d.key is None else _escaped(d.key), "reason": d.reason, "created_at": d.created_at,
        "retries": d.retries, "retried_at": d.retried_at, "value_json": value_json,
        "value_text": None if d.value is None else _escaped(d.value), "value_bytes": _size(d),
        "tombstone": d.value is None,
    }


def render_show(d: DeadLetter) -> str:
    if d.value is None:
        value, kind = "(none)", "a tombstone: the record has no value"
    else:
        try:
            value = orjson.dumps(orjson.loads(d.value), option=orjson.OPT_INDENT_2).decode()
            kind = "JSON"
        except orjson.JSONDecodeError:
            value, kind = _escaped(d.value), "not JSON; shown escaped"
    retried = "never" if d.retries == 0 else f"{d.retries} time(s), last {ago(_age(d.retried_at))}"
    lines = [
        f"dead letter #{d.id}",
        format_table(
            ["", ""],
            [
                ["projection", d.projection],
                ["origin", f"topic {d.topic}, partition {d.partition}, offset {d.offset}"],
                ["key", "(none)" if d.key is None else _escaped(d.key)],
                ["recorded", f"{d.created_at.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ} ({ago(_age(d.created_at))})"],
                ["replayed", retried],
                ["reason", d.reason],
            ],
        ).split("\n", 1)[1],
        "",
        f"value ({kind}, {_size(d)} bytes):",
        value,
    ]
    return "\n".join(lines)
