"""Properties of the thread fold (ARCHITECTURE invariants 3 and 4):

- a stream with events duplicated (same ``event_id``, as a retrying producer re-sends) projects
  the same as without them — the engine dedupes, and the fold itself is idempotent per message;
- any interleaving of the two topics that keeps per-key order within each topic projects the
  same as time order;
- stale reads (an earlier ``read_up_to`` sent with a later ``read_at``), wherever they arrive,
  change nothing: read markers only move forward.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from readside.load import Record, thread_stream
from readside.readmodels.threads.fold import fold_all, render
from tests.support import as_event, dedupe, merge_keeping_order, with_stale_reads

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


def _rows(records: list[Record]) -> dict:
    states = fold_all(as_event(r) for r in records)
    return {(row.user_id, row.thread_id): (row.role, row.listed, row.unread_count, row.item) for s in states.values() for row in render(s)}


streams = st.builds(
    lambda seed, threads: thread_stream(threads=threads, messages_per_thread=(2, 8), users=6, seed=seed),
    st.integers(0, 10_000),
    st.integers(1, 6),
)


@SETTINGS
@given(streams, st.data())
def test_duplicated_events_project_the_same(stream, data):
    picks = data.draw(st.lists(st.sampled_from(range(len(stream))), max_size=len(stream)))
    noisy = list(stream)
    for i in picks:  # re-send event i somewhere after its first delivery
        pos = data.draw(st.integers(i + 1, len(noisy)))
        noisy.insert(pos, stream[i])
    assert _rows(dedupe(noisy)) == _rows(stream)
    # the fold alone also tolerates raw redelivery of the same event
    assert _rows(noisy) == _rows(stream)


@SETTINGS
@given(streams, st.randoms(use_true_random=False))
def test_any_cross_topic_interleaving_projects_like_time_order(stream, rnd):
    # Per-key order holds within a topic; across topics anything goes. Shuffle which topic's
    # next event comes first, keeping each topic's own order.
    mixed = merge_keeping_order(stream, lambda r: r.topic, rnd)
    assert _rows(mixed) == _rows(stream)


@SETTINGS
@given(streams, st.randoms(use_true_random=False))
def test_threads_are_independent_so_any_per_thread_order_preserving_merge_is_equal(stream, rnd):
    # Partitions interleave arbitrarily: any merge that keeps each key's order is equivalent.
    merged = merge_keeping_order(stream, lambda r: (r.topic, r.key), rnd)
    assert _rows(merged) == _rows(stream)


@SETTINGS
@given(streams, st.randoms(use_true_random=False))
def test_even_a_full_shuffle_projects_like_time_order(stream, rnd):
    # Stronger than the contract needs: every merge in the fold is commutative (registers keep the
    # latest time, messages are a set, deletion is sticky), so even per-key order may break —
    # a read marker before its messages, a delete before its create.
    shuffled = list(stream)
    rnd.shuffle(shuffled)
    assert _rows(shuffled) == _rows(stream)


@SETTINGS
@given(streams, st.randoms(use_true_random=False))
def test_stale_reads_anywhere_change_nothing(stream, rnd):
    noisy = with_stale_reads(stream, rnd)
    assert _rows(noisy) == _rows(stream)
    shuffled = list(noisy)
    rnd.shuffle(shuffled)
    assert _rows(shuffled) == _rows(stream)
