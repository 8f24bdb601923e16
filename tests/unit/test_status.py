"""``readside.projector.status.summarize``: lag, lag seconds and the stalled rule, from rows and heads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from readside.projector.status import _Rows, summarize
from readside.shared.kafka import Head

NOW = 1_800_000_000.0
AT = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
TP = ("threads.events", 0)


def rows(*, offset: int | None = 10, age: float = 5.0, recorded: int | None = None, state: str = "live") -> _Rows:
    checkpoints = {"threads": {TP: (offset, AT, age)}} if offset is not None else {}
    return _Rows(
        projections=[("threads", 1, state, 0, AT)],
        checkpoints=checkpoints,
        recorded={TP: recorded} if recorded is not None else {},
        dead={"threads": 2},
    )


def one(status):
    (p,) = status.projections
    (part,) = [q for q in p.partitions if (q.topic, q.partition) == TP]
    return p, part


@pytest.mark.parametrize(
    ("db", "head", "want"),
    [
        pytest.param(rows(), Head(10, None), ("live", False, 0, 0.0), id="caught-up"),
        pytest.param(rows(age=3600), Head(11, NOW - 0.5), ("live", False, 1, 0.5), id="idle-partition-just-got-an-event"),
        pytest.param(rows(age=3600), Head(15, NOW - 120), ("stalled", True, 5, 120.0), id="old-pending-and-no-progress"),
        pytest.param(rows(age=5), Head(15, NOW - 120), ("live", False, 5, 120.0), id="behind-but-moving"),
        pytest.param(rows(age=3600, state="rebuilding"), Head(15, NOW - 120), ("rebuilding", True, 5, 120.0), id="rebuilding-kept"),
        pytest.param(rows(age=90, recorded=14), None, ("stalled", True, 4, 90.0), id="no-broker-recorded-head-checkpoint-age"),
        pytest.param(rows(offset=None), Head(3, NOW - 600), ("stalled", True, 3, 600.0), id="never-assigned"),
    ],
)
def test_lag_and_stall(db: _Rows, head: Head | None, want: tuple) -> None:
    status = summarize(db, {TP: head} if head else {}, prefix="", stall_after=60, now=NOW)
    p, part = one(status)
    assert (p.shown_state, p.stalled, p.lag, p.lag_seconds) == want
    assert p.state == db.projections[0][2]  # JSON keeps the contract's values
    assert part.stalled == p.stalled and part.lag == p.lag
    assert part.head_from == ("broker" if head else "partition_heads")
    assert p.dead_letters == 2


def test_a_head_never_moves_back_and_lag_is_never_negative() -> None:
    # the broker under-reports (or answers for a partition the projector is ahead on)
    status = summarize(rows(offset=10, recorded=12), {TP: Head(9, None)}, prefix="", stall_after=60, now=NOW)
    _, part = one(status)
    assert (part.high_watermark, part.lag) == (12, 2)


def test_declared_topics_are_listed_with_the_prefix_even_before_any_checkpoint() -> None:
    heads = {("p.threads.events", 1): Head(4, NOW - 1), ("p.payments.events", 0): Head(0, None), ("other.events", 0): Head(9, None)}
    status = summarize(rows(offset=None), heads, prefix="p.", stall_after=60, now=NOW)
    (p,) = status.projections
    assert [(q.topic, q.partition, q.offset, q.lag) for q in p.partitions] == [
        ("p.threads.events", 1, 0, 4),
        ("p.payments.events", 0, 0, 0),
    ]
