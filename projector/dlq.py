"""Dead letters: list, show, replay (``readside dlq``).

The ``dead_letters`` table holds every record a projection could not apply: the original bytes
(``value`` NULL for a tombstone), the origin (topic, partition, offset), the reason. The
``<topic>.dlq`` topics hold the same records for other consumers — except one too large for the
topic, announced there by a small pointer record (``readside.projector.engine.pointer``); the table keeps
it whole. Replay reads the table, which is exactly-once.

**Replay** re-decodes each selected dead letter with today's schemas (a deployed upcaster, a
relaxed model) and runs them, per projection, through the write pipeline
(``readside.projector.pipeline``) — the live ``dedupe`` table, the projection's ``apply``, poison
isolated as the projector isolates it — in one transaction with the removal of the dead letters
done with:

- one that decodes and its projection handles is applied — an event the projector applied
  meanwhile (a producer re-sent it), an earlier replay applied, or that two dead letters share,
  is applied once and counted as a duplicate;
- one whose type is now unknown to the projection is dropped, as the projector would skip it;
- one that still fails (decoding, or the fold — a ``DataError``, a ``ProgramLimitExceeded``... as
  the projector classifies them, ``readside.shared.errors.record_fault``) stays, with the new reason and
  ``retries + 1``; dead letters of one event share its fate; an unavailable database stops the
  replay (what committed stays done).

Dead letters are taken ``FOR UPDATE SKIP LOCKED``, so two replays never apply one twice. After
each commit the cache versions of what changed are bumped, as the projector does. Folds here are
order-independent (they keep the latest payload time), so a late replay gives the rows an
in-order arrival would have given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg

from readside.projector import bookkeeping, outbox
from readside.projector.pipeline import Batch, Pipeline, Record, decode_record
from readside.readmodels.base import Projection
from readside.readmodels.registry import REGISTRY
from readside.shared.cache import Cache, CacheDown
from readside.shared.settings import Settings
from readside.shared.table import ago, format_table

__all__ = ["DeadLetter", "ReplayResult", "get", "list_dead_letters", "render_list", "render_show", "replay", "show_json"]

log = logging.getLogger(__name__)

CHUNK = 500


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
    rows, total = await bookkeeping.list_dead_letters(conn, projection, limit)
    return [DeadLetter.of(r) for r in rows], total


async def get(conn: psycopg.AsyncConnection, dead_letter_id: int) -> DeadLetter | None:
    row = await bookkeeping.get_dead_letter(conn, dead_letter_id)
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


class _ReplayStore:
    """The dead letters of one projection being replayed, as the pipeline's store: the live
    ``dedupe``; a failure updates the reason and ``retries`` of its dead letters (all those of
    its event); no positions — a dead letter done with is deleted instead."""

    def __init__(self, projection: str, letters: list[DeadLetter], records: list[Record]) -> None:
        self.projection = projection
        self.by_origin = {(d.topic, d.partition, d.offset): d for d in letters}
        self.by_event: dict[str, list[DeadLetter]] = {}
        for record in records:
            if record.event is not None:
                self.by_event.setdefault(record.event.event_id, []).append(self.by_origin[record.origin])
        self.failing: list[tuple[DeadLetter, str]] = []

    async def record_positions(self, conn: psycopg.AsyncConnection, batch: Batch) -> None:
        pass

    async def first_seen(self, conn: psycopg.AsyncConnection, event_ids: list[str]) -> set[str]:
        return await bookkeeping.first_seen(conn, self.projection, event_ids)

    async def forget_seen(self, conn: psycopg.AsyncConnection, event_ids: list[str]) -> None:
        await bookkeeping.forget_seen(conn, self.projection, event_ids)

    async def record_failures(self, conn: psycopg.AsyncConnection, failures: list[tuple[Record, str]]) -> None:
        failing = [
            (letter, reason)
            for record, reason in failures
            for letter in (self.by_event[record.event.event_id] if record.event is not None else [self.by_origin[record.origin]])
        ]
        await bookkeeping.retry_dead_letters(conn, [(d.id, reason) for d, reason in failing])
        self.failing += failing

    async def finish(self, conn: psycopg.AsyncConnection, batch: Batch) -> None:
        pass


async def _replay_one(
    conn: psycopg.AsyncConnection, projection: Projection, letters: list[DeadLetter], prefix: str, result: ReplayResult
) -> tuple[list[DeadLetter], set[str]]:
    """Replay ``letters`` (of ``projection``); returns the dead letters done with and the cache
    scopes changed."""
    records: list[Record] = []
    for d in letters:
        record = decode_record(projection, prefix, d.topic, d.partition, d.offset, d.key, d.value)
        if record is None:  # a type the projection no longer handles: dropped, as live
            result.ignored += 1
        else:
            records.append(record)
    store = _ReplayStore(projection.name, letters, records)
    written = await Pipeline(store, projection.apply).write(conn, Batch(records))
    fresh, poison = written.fresh_ids, written.poison_ids
    for event_id, group in store.by_event.items():
        if event_id not in poison:
            applied = int(event_id in fresh)
            result.replayed += applied
            result.duplicates += len(group) - applied
    failing = {d.id for d, _ in store.failing}
    result.failing += store.failing
    return [d for d in letters if d.id not in failing], written.changed


async def _replay_chunk(conn: psycopg.AsyncConnection, letters: list[DeadLetter], prefix: str, result: ReplayResult) -> set[str]:
    by_projection: dict[str, list[DeadLetter]] = {}
    lost: list[tuple[DeadLetter, str]] = []
    for letter in letters:
        if letter.projection in REGISTRY:
            by_projection.setdefault(letter.projection, []).append(letter)
        else:
            lost.append((letter, f"projection {letter.projection!r} is not in this version (known: {', '.join(sorted(REGISTRY))})"))
    await bookkeeping.retry_dead_letters(conn, [(d.id, reason) for d, reason in lost])
    result.failing += lost
    done: list[DeadLetter] = []
    changed: set[str] = set()
    for name in sorted(by_projection):
        finished, scopes = await _replay_one(conn, REGISTRY[name], by_projection[name], prefix, result)
        done += finished
        changed |= scopes
    await bookkeeping.delete_dead_letters(conn, [d.id for d in done])
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
            present = await bookkeeping.dead_letter_ids(conn, ids, projection)
            result.missing = [i for i in dict.fromkeys(ids) if i not in present]
            total = len(present)
            chunks: list[list[int]] | None = [sorted(present)[i : i + CHUNK] for i in range(0, len(present), CHUNK)]
        else:
            total = await bookkeeping.count_dead_letters(conn, projection)
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
                    letters = [DeadLetter.of(r) for r in await bookkeeping.claim_dead_letters(conn, chunk_ids, after, projection, CHUNK)]
                    if not letters and chunk_ids is None:
                        break
                    changed = await _replay_chunk(conn, letters, settings.topic_prefix, result)
                    row = await outbox.record(conn, "dlq-replay", changed) if cache is not None and changed else None
                if chunk_ids is not None:  # taken meanwhile by another replay (locked) or gone
                    claimed = {d.id for d in letters}
                    result.missing += [i for i in chunk_ids if i not in claimed]
                if letters:
                    after = letters[-1].id
                if cache is not None and row is not None:
                    try:
                        await cache.bump(changed)
                        await outbox.forget(conn, [row])
                    except CacheDown as exc:  # the row stays: a running projector relays it
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
    return None if at is None else max((datetime.now(UTC) - at).total_seconds(), 0.0)


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
                ["recorded", f"{d.created_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ} ({ago(_age(d.created_at))})"],
                ["replayed", retried],
                ["reason", d.reason],
            ],
        ).split("\n", 1)[1],
        "",
        f"value ({kind}, {_size(d)} bytes):",
        value,
    ]
    return "\n".join(lines)
