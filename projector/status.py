"""Where every projection stands: ``readside status``, ``GET /v1/admin/projections`` and the
projector's own ``/readyz`` all read this one computation.

Per projection: version, state, dead letters, unknown types skipped, last batch; per partition:
checkpoint, high watermark, lag in events and in seconds, when the checkpoint last moved.

- **High watermarks** come from the broker when it answers (:class:`readside.shared.kafka.BrokerHeads`),
  so a dead projector cannot hide its lag; otherwise (or for a partition the broker did not
  answer for) from ``partition_heads``, which the projector records with every batch. The larger
  of the two wins: a head never moves back.
- **Lag in seconds** is the age of the oldest event not yet applied (its Kafka record timestamp);
  when the broker cannot tell, the time since the checkpoint last moved. 0 when caught up.
- **Stalled**: lag > 0, the checkpoint has not moved for ``stall_after`` seconds, and the oldest
  pending event is older than that too (so an idle partition that just received an event is not
  stalled).

In JSON (``readside status --json`` and the admin endpoint alike) ``state`` is what
``projections.state`` holds — the contract's ``live`` | ``rebuilding`` — and ``stalled`` is a
boolean beside it, so a client written against the contract never meets a value it does not know.
The table (and ``/readyz``) show the two combined: a stalled ``live`` projection reads ``stalled``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from readside.projector import bookkeeping
from readside.readmodels.registry import REGISTRY
from readside.shared.kafka import BrokerHeads, BrokerUnavailable, Head
from readside.shared.table import ago, duration, format_table

__all__ = ["PartitionStatus", "ProjectionStatus", "Status", "collect", "load", "render", "summarize"]


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    topic: str
    partition: int
    offset: int  # the checkpoint: the next offset to apply
    high_watermark: int
    lag: int
    lag_seconds: float | None  # None: lag > 0 but neither the broker nor a checkpoint can date it
    checkpoint_at: datetime | None  # when the checkpoint last moved (None: never assigned)
    head_from: str  # "broker" or "partition_heads"
    stalled: bool


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    name: str
    version: int
    state: str  # projections.state: "live", "rebuilding"
    stalled: bool
    lag: int
    lag_seconds: float | None
    dead_letters: int
    skipped_unknown: int
    last_batch_at: datetime | None
    partitions: tuple[PartitionStatus, ...]
    # an unfinished ``readside rebuild``/``rollback`` (the ``rebuilds`` row): kind, target_version,
    # phase, events_done, events_total, updated_at; None when there is none
    rebuild: dict[str, Any] | None = None

    @property
    def shown_state(self) -> str:
        """``state``, except that a stalled live projection reads ``stalled``."""
        return "stalled" if self.stalled and self.state == "live" else self.state


@dataclass(frozen=True, slots=True)
class Status:
    projections: tuple[ProjectionStatus, ...]
    stall_after: float
    heads_from: str  # "broker", or "partition_heads" when the broker did not answer
    broker_error: str | None  # why the broker was not used

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"projections": [asdict(p) for p in self.projections]}

    @property
    def stalled(self) -> list[str]:
        return [p.name for p in self.projections if p.stalled]


@dataclass(frozen=True, slots=True)
class _Rows:
    projections: list[tuple[str, int, str, int, datetime | None]]
    checkpoints: dict[str, dict[tuple[str, int], tuple[int, datetime, float]]]
    recorded: dict[tuple[str, int], int]
    dead: dict[str, int]
    rebuilds: dict[str, dict[str, Any]] = field(default_factory=dict)


async def load(conn: psycopg.AsyncConnection, names: Iterable[str] | None = None) -> _Rows:
    """Everything PostgreSQL knows: four small reads, no locks (the projector is never blocked)."""
    projections, rows, heads, dead_rows, rebuild_rows = await bookkeeping.status_rows(
        conn, None if names is None else list(names)
    )
    checkpoints: dict[str, dict[tuple[str, int], tuple[int, datetime, float]]] = {}
    for projection, topic, partition, offset, at, age in rows:
        checkpoints.setdefault(projection, {})[(topic, partition)] = (offset, at, max(age, 0.0))
    recorded = {(t, p): hw for t, p, hw in heads}
    dead = {name: n for name, n in dead_rows}
    rebuilds = {
        name: {"kind": kind, "target_version": target, "phase": phase, "events_done": done,
               "events_total": total, "updated_at": at}
        for name, kind, target, phase, done, total, at in rebuild_rows
    }
    return _Rows(list(projections), checkpoints, recorded, dead, rebuilds)


def _topics(rows: _Rows, name: str, prefix: str) -> list[str]:
    declared = [prefix + t for t in REGISTRY[name].topics] if name in REGISTRY else []
    seen = [t for t, _ in rows.checkpoints.get(name, {})]
    return list(dict.fromkeys(declared + sorted(seen)))


def summarize(
    rows: _Rows,
    heads: dict[tuple[str, int], Head],
    *,
    prefix: str,
    stall_after: float,
    broker_error: str | None = None,
    now: float | None = None,
) -> Status:
    """Combine the database's rows with the broker's heads (pure: no I/O)."""
    now = time.time() if now is None else now
    out = []
    for name, version, state, skipped, last_batch in rows.projections:
        topics = _topics(rows, name, prefix)
        cps = rows.checkpoints.get(name, {})
        keys = {k for k in list(cps) + list(heads) + list(rows.recorded) if k[0] in topics}
        parts = []
        for topic, partition in sorted(keys, key=lambda k: (topics.index(k[0]), k[1])):
            offset, at, age = cps.get((topic, partition), (0, None, None))
            head = heads.get((topic, partition))
            recorded = rows.recorded.get((topic, partition), 0)
            hw = max(head.high_watermark if head else 0, recorded, offset)
            lag = hw - offset
            if lag == 0:
                seconds: float | None = 0.0
            elif head is not None and head.pending_since is not None:
                seconds = max(now - head.pending_since, 0.0)
            else:
                seconds = age
            stalled = lag > 0 and (age is None or age > stall_after) and (seconds is None or seconds > stall_after)
            parts.append(
                PartitionStatus(
                    topic, partition, offset, hw, lag,
                    None if seconds is None else round(seconds, 3),
                    at, "broker" if head is not None else "partition_heads", stalled,
                )
            )
        stalled = any(p.stalled for p in parts)
        known = [p.lag_seconds for p in parts if p.lag_seconds is not None]
        out.append(
            ProjectionStatus(
                name=name,
                version=version,
                state=state,
                stalled=stalled,
                lag=sum(p.lag for p in parts),
                lag_seconds=max(known) if known else (None if parts else 0.0),
                dead_letters=rows.dead.get(name, 0),
                skipped_unknown=skipped,
                last_batch_at=last_batch,
                partitions=tuple(parts),
                rebuild=rows.rebuilds.get(name),
            )
        )
    heads_from = "broker" if broker_error is None else "partition_heads"
    return Status(tuple(out), stall_after, heads_from, broker_error)


async def collect(
    pool: Any,
    reader: BrokerHeads | None,
    *,
    prefix: str,
    stall_after: float,
    names: Iterable[str] | None = None,
) -> Status:
    """Read PostgreSQL, then (without holding a connection) the broker, and combine them.

    ``pool`` is anything with an async ``connection()`` context (a psycopg pool, or the CLI's
    one-shot connections).
    """
    async with pool.connection() as conn:
        rows = await load(conn, names)
    heads: dict[tuple[str, int], Head] = {}
    error = None
    if reader is None:
        error = "not asked (no broker configured here)"
    else:
        topics = list(dict.fromkeys(t for name, *_ in rows.projections for t in _topics(rows, name, prefix)))
        positions: dict[tuple[str, int], int] = {}
        for name, *_ in rows.projections:
            for key, (offset, _, _) in rows.checkpoints.get(name, {}).items():
                # two projections never share a topic today; if they did, the slower one dates the lag
                positions[key] = min(offset, positions.get(key, offset))
        try:
            heads = await reader.read(topics, positions)
        except BrokerUnavailable as exc:
            error = str(exc)
    return summarize(rows, heads, prefix=prefix, stall_after=stall_after, broker_error=error)


def render(status: Status, bootstrap: str) -> str:
    """The aligned tables ``readside status`` prints."""
    now = datetime.now(UTC)

    def since(at: datetime | None) -> str:
        return ago(None if at is None else max((now - at).total_seconds(), 0.0))

    if status.heads_from == "broker":
        source = f"high watermarks from the broker ({bootstrap})"
    else:
        source = f"high watermarks as last recorded by the projector ({status.broker_error}; check READSIDE_KAFKA_BOOTSTRAP)"
    lines = [f"{source}; stalled = lag with no progress for {duration(status.stall_after)}", ""]
    if not status.projections:
        return "\n".join(lines + ["no projections yet: start the projector (or run `readside migrate`)"])
    lines.append(
        format_table(
            ["PROJECTION", "VERSION", "STATE", "LAG", "LAG TIME", "DEAD LETTERS", "SKIPPED", "LAST BATCH"],
            [
                [p.name, p.version, p.shown_state, p.lag, duration(p.lag_seconds), p.dead_letters, p.skipped_unknown,
                 since(p.last_batch_at)]
                for p in status.projections
            ],
            right=(1, 3, 4, 5, 6),
        )
    )
    for p in status.projections:
        if p.rebuild is not None:
            r = p.rebuild
            share = f" ({100 * r['events_done'] // r['events_total']}%)" if r["events_total"] else ""
            lines.append(
                f"{p.name}: {r['kind']} to v{r['target_version']}, phase {r['phase']}, "
                f"{r['events_done']:,}/{r['events_total']:,} events{share}, last progress {since(r['updated_at'])}"
            )
    rows = []
    for p in status.projections:
        for part in p.partitions:
            notes = ["stalled"] if part.stalled else []
            if part.head_from != "broker" and status.heads_from == "broker":
                notes.append("head as last recorded")
            rows.append(
                [p.name, part.topic, part.partition, part.offset, part.high_watermark, part.lag,
                 duration(part.lag_seconds), since(part.checkpoint_at), ", ".join(notes)]
            )
    if not rows:
        return "\n".join(lines + ["", "no partitions yet: the projector has not been assigned any"])
    lines.append("")
    lines.append(
        format_table(
            ["PROJECTION", "TOPIC", "PARTITION", "CHECKPOINT", "HIGH WATERMARK", "LAG", "LAG TIME", "CHECKPOINT MOVED", "NOTE"],
            rows,
            right=(2, 3, 4, 5, 6),
        )
    )
    return "\n".join(lines)
