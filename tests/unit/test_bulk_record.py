"""``BulkRecord`` (the bulk phase's record) reads as a ``Record`` does: same fields, same
properties, same decoding verdicts through ``decode_record``."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from readside.load import thread_stream
from readside.projector.pipeline import BulkRecord, Record, decode_record
from readside.readmodels.registry import REGISTRY

FIELDS = [f.name for f in dataclasses.fields(Record)]


def test_same_fields() -> None:
    assert sorted(BulkRecord.__slots__) == sorted(FIELDS)


def _records() -> list[tuple[str, bytes | None, bytes | None]]:
    good = [(r.topic, r.key.encode(), orjson.dumps(r.value)) for r in thread_stream(threads=3, seed=3)]
    bad = [
        ("threads.events", b"t-1", None),  # tombstone
        ("threads.events", b"t-1", b"{not json"),
        ("threads.events", b"t-1", orjson.dumps({"event_id": "e", "type": "message.created", "schema_version": 1})),
        ("requests.events", b"r-1", b"{}"),  # a topic the projection does not read: rejected or skipped alike
    ]
    return good + bad


@pytest.mark.parametrize("i", range(len(_records())))
def test_decodes_as_record(i: int) -> None:
    topic, key, value = _records()[i]
    args = (REGISTRY["threads"], "p.", "p." + topic, 2, 40 + i, key, value)
    plain, light = decode_record(*args), decode_record(*args, BulkRecord)
    if plain is None:
        assert light is None
        return
    assert type(light) is BulkRecord
    assert {f: getattr(light, f) for f in FIELDS} == {f: getattr(plain, f) for f in FIELDS}
    assert (light.tp, light.origin) == (plain.tp, plain.origin)
