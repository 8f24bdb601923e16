"""What an operator reads from a rebuild: the progress line and the --verify report."""

from __future__ import annotations

import io

from readside.projector.progress import Progress, duration
from readside.projector.verify import TableDiff, report


def test_duration_reads_as_hours_minutes_seconds() -> None:
    assert [duration(s) for s in (0, 59.9, 61, 3725, -3)] == ["0:00:00", "0:00:59", "0:01:01", "1:02:05", "0:00:00"]


def test_progress_line_has_count_percent_rate_eta_and_topics() -> None:
    out = io.StringIO()
    progress = Progress("threads v2 bulk", 1000, start=100, stream=out)
    progress.began -= 10  # as if 10 s had passed
    progress.update(600, {"threads.events": (550, 900), "payments.events": (50, 100)}, force=True)
    line = out.getvalue().strip()
    assert line.startswith("threads v2 bulk: 600/1,000 events (60%) | 50 events/s | ETA 0:00:08 | ")
    assert line.endswith("payments.events 50/100  threads.events 550/900")  # the rate leaves out the resumed 100


def test_progress_without_a_rate_yet_says_so() -> None:
    progress = Progress("catch-up", 10, stream=io.StringIO())
    assert "ETA ?" in progress.line()


def test_verify_report_names_tables_kinds_and_keys() -> None:
    diffs = [
        TableDiff("threads"),
        TableDiff("thread_previews", changed=1, extra=1, examples=[("changed", "(u-1,t-1)"), ("extra", "(u-2,t-9)")]),
        TableDiff("thread_pins", columns_only_new=["note"]),
    ]
    assert report(diffs).splitlines() == [
        "  threads: same",
        "  thread_previews: DIFFERS — 1 changed, 0 only in live, 1 only in new",
        "      changed  key (u-1,t-1)",
        "      extra    key (u-2,t-9)",
        "  thread_pins: same (columns only in live: []; only in new: ['note'])",
    ]
