"""Processes of this machine, by pid; and this process's garbage collector."""

from __future__ import annotations

import gc
import os

__all__ = ["BATCH_GC_THRESHOLDS", "collect_for_batches", "pid_alive"]

# The cyclic collector's thresholds for a process that works in batches (the projector): a
# collection of the youngest generation every 50,000 allocations (CPython's default: 700), the
# next every 20 of those, the oldest every 100 of those. A batch of 5,000 decoded events and its
# rows holds ~10^5 young objects until it commits; at the default thresholds the collector walked
# them again and again, and promoted them to be walked again by each older collection — measured
# on 200k events of the thread mix (the decode of the read-ahead timed apart): 30 us of decoding
# per event in the projector against 8 us alone (``python -m bench.decode``), 8.3-8.6k events/s
# against 13.4k with these thresholds and 14.1k with the collector off. Cycles are rare (reference
# counting frees the batches); the few there are wait a little longer.
BATCH_GC_THRESHOLDS = (50_000, 20, 100)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0: checked, not sent; another user's counts too)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collect_for_batches() -> None:
    """Set this process's collector to :data:`BATCH_GC_THRESHOLDS` (``readside projector``)."""
    gc.set_threshold(*BATCH_GC_THRESHOLDS)
