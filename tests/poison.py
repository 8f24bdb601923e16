"""The poison corpus: bad records the projector must dead-letter (or skip) and go on. One list.

Each ``Poison`` makes one bad record from a good record of the same topic (its template):
``make(good, fresh_id)`` returns ``(key, value)`` for the template's topic. ``reason`` is a
substring of the dead letter's reason; ``None`` means the record is not a dead letter but an
unknown type, skipped and counted (``projections.skipped_unknown``).

The chaos test (``tests/integration/test_chaos.py``) publishes every kind on every topic, between
good events: add a kind here and it is covered there. A kind must stay bad whatever its
template (any topic, any event type).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from readside.load import Record

__all__ = ["POISON", "Poison"]

# the aggregate id field of each topic's payloads (CONTRACT §1, "Topics")
KEY_FIELD = {
    "threads.events": "thread_id",
    "payments.events": "thread_id",
    "requests.events": "request_id",
    "providers.events": "provider_id",
    "workflows.events": "workflow_id",
}
# a known type that ``topic`` does not carry
FOREIGN_TYPE = {"threads.events": "payment.received"}


@dataclass(frozen=True)
class Poison:
    name: str
    make: Callable[[Record, str], tuple[bytes | None, bytes | None]]
    reason: str | None  # a substring of the dead letter's reason; None: skipped as an unknown type


def _env(good: Record, event_id: str, **changes: Any) -> dict[str, Any]:
    return {**good.value, "event_id": event_id, **changes}


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


POISON: tuple[Poison, ...] = (
    Poison("not JSON", lambda g, i: (g.key.encode(), b'{"event_id": "' + i.encode() + b'", "type": '), "not JSON"),
    Poison("not an object", lambda g, i: (g.key.encode(), _json([_env(g, i)])), "must be a JSON object"),
    Poison(
        "envelope without occurred_at",
        lambda g, i: (g.key.encode(), _json({k: v for k, v in _env(g, i).items() if k != "occurred_at"})),
        "occurred_at",
    ),
    Poison(
        "invalid payload",
        lambda g, i: (g.key.encode(), _json(_env(g, i, payload={KEY_FIELD[g.topic]: g.key}))),
        "payload",
    ),
    Poison(
        "aggregate id of the wrong type",
        lambda g, i: (g.key.encode(), _json(_env(g, i, payload={**g.value["payload"], KEY_FIELD[g.topic]: 7}))),
        "payload",
    ),
    # an invalid copy of a good event, under its id: it must not count as seen (the good one applies)
    Poison(
        "invalid copy of a good event",
        lambda g, i: (g.key.encode(), _json({**g.value, "payload": {KEY_FIELD[g.topic]: g.key}})),
        "payload",
    ),
    Poison("record key mismatch", lambda g, i: ((g.key + "-other").encode(), _json(_env(g, i))), "differs from payload"),
    Poison("unsupported schema_version", lambda g, i: (g.key.encode(), _json(_env(g, i, schema_version=2))), "schema_version"),
    Poison(
        "type the topic does not carry",
        lambda g, i: (g.key.encode(), _json(_env(g, i, type=FOREIGN_TYPE.get(g.topic, "message.created")))),
        "not carried by topic",
    ),
    Poison("unknown type", lambda g, i: (g.key.encode(), _json(_env(g, i, type="thread.reacted"))), None),
)
