"""A progress line on stderr for long operations: done/total, events/s, ETA, per topic.

On a terminal the line is redrawn in place (at most 4 times a second); otherwise (a log file, CI)
one line is printed every ``every`` seconds. ``finish`` prints the final line either way.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "duration"]


def duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    def __init__(
        self, label: str, total: int, *, start: int = 0, stream: TextIO | None = None, every: float = 5.0
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.every = 0.25 if self.tty else every
        self.began = time.monotonic()
        self.start = start  # done before this run (a resumed build): not part of the rate
        self.done = start
        self.topics: dict[str, tuple[int, int]] = {}
        self._shown = 0.0
        self._width = 0

    def rate(self) -> float:
        elapsed = time.monotonic() - self.began
        return (self.done - self.start) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        left = self.total - self.done
        eta = duration(left / rate) if rate > 0 and left > 0 else ("0:00:00" if left <= 0 else "?")
        parts = [
            f"{self.label}: {self.done:,}/{self.total:,} events{pct}",
            f"{rate:,.0f} events/s",
            f"ETA {eta}",
        ]
        if self.topics:
            parts.append("  ".join(f"{t} {d:,}/{n:,}" for t, (d, n) in sorted(self.topics.items())))
        return " | ".join(parts)

    def update(self, done: int, topics: dict[str, tuple[int, int]] | None = None, *, force: bool = False) -> None:
        self.done = done
        if topics is not None:
            self.topics = topics
        now = time.monotonic()
        if force or now - self._shown >= self.every:
            self._shown = now
            self._write()

    def _write(self, end: str = "") -> None:
        text = self.line()
        if self.tty:
            pad = max(self._width - len(text), 0)
            self.stream.write("\r" + text + " " * pad + end)
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self, note: str = "") -> None:
        elapsed = time.monotonic() - self.began
        self.label = f"{self.label} done in {duration(elapsed)}{note}"
        if self.tty:
            self._write("\n")
        else:
            self._write()
