"""The served-path load generator: ``wrk`` (C, one thread) when installed, else the Python client.

On 2 cores an asyncio client in Python takes about as much CPU as the server it measures, so it
measures itself as much as the server; ``wrk`` takes a small share. Install it with
``apt-get install -y wrk`` (Debian/Ubuntu; ``brew install wrk`` on macOS). Without it the
figures come from ``_common.hammer`` and a warning says so: read them as lower bounds.

Requests cycle through one set of headers per viewer (a Lua ``request`` function). wrk counts
only statuses >= 400 as errors, so the caller checks each path's status once before loading it
(and the bytes per response say whether 200s or 304s came back).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench._common import hammer, say

INSTALL = "apt-get install -y wrk  (Debian/Ubuntu; macOS: brew install wrk)"

_SCRIPT = """
local heads = %(heads)s
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", %(path)s, heads[(i %% #heads) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\\n@@{"requests":%%d,"us":%%d,"p50":%%d,"p99":%%d,"bytes":%%d,"errors":%%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), summary.bytes,
    e.connect + e.read + e.write + e.timeout + e.status))
end
"""


@dataclass
class Figures:
    """One path under load: requests per second and client-side latency percentiles."""

    label: str
    rps: float
    p50: float  # ms
    p99: float  # ms
    requests: int
    errors: int
    bytes_per_response: float
    tool: str

    def line(self) -> str:
        return (f"{self.label:<34} {self.rps:>10,.1f} req/s  p50 {self.p50:>8.2f} ms  p99 {self.p99:>8.2f} ms  "
                f"n={self.requests:,} err={self.errors} {self.bytes_per_response:,.0f} B/resp ({self.tool})")


def combine(label: str, runs: Sequence[Figures]) -> Figures:
    """Several runs of one path: requests over their summed time; the median of their p50s and p99s."""
    if len(runs) == 1:
        return runs[0]
    n = sum(r.requests for r in runs)
    seconds = sum(r.requests / r.rps for r in runs if r.rps)
    return Figures(label, n / seconds if seconds else 0.0, statistics.median(r.p50 for r in runs),
                   statistics.median(r.p99 for r in runs), n, sum(r.errors for r in runs),
                   sum(r.bytes_per_response * r.requests for r in runs) / n if n else 0.0, runs[0].tool)


def available() -> bool:
    return shutil.which("wrk") is not None


def _lua(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid Lua string literal for these (ASCII) values


def _wrk(base_url: str, script: Path, concurrency: int, seconds: float) -> dict:
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "60s",
            "-s", str(script), base_url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return json.loads(out.rpartition("@@")[2])


async def load(label: str, base_url: str, path: str, headers: Sequence[dict[str, str]], *, concurrency: int,
               duration: float, warmup: float, expect: int = 200) -> Figures:
    """``concurrency`` keep-alive connections on GET ``path`` for ``warmup`` (discarded) then ``duration`` s."""
    if not available():
        r = await hammer(label, base_url, path, headers, expect=expect, concurrency=concurrency,
                         duration=duration, warmup=warmup)
        n = len(r.latencies)
        return Figures(label, r.rps, r.p(0.5), r.p(0.99), n, r.errors, r.body_bytes / n if n else 0.0, "python client")
    heads = "{" + ", ".join("{" + ", ".join(f"[{_lua(k)}] = {_lua(v)}" for k, v in h.items()) + "}"
                            for h in headers) + "}"
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="rs-bench-wrk-", delete=False) as f:
        f.write(_SCRIPT % {"heads": heads, "path": _lua(path)})
    script = Path(f.name)
    try:
        if warmup > 0:
            await asyncio.to_thread(_wrk, base_url, script, concurrency, warmup)
        got = await asyncio.to_thread(_wrk, base_url, script, concurrency, duration)
    finally:
        script.unlink()
    n = got["requests"]
    return Figures(label, n / (got["us"] / 1e6), got["p50"] / 1000, got["p99"] / 1000, n, got["errors"],
                   got["bytes"] / n if n else 0.0, "wrk")


def warn_if_missing() -> None:
    if not available():
        say(f"WARNING: wrk is not installed; the served-path rows use the Python client, which competes with "
            f"the server for CPU (figures are lower bounds). Install it: {INSTALL}")
