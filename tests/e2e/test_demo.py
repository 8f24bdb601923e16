"""The README's first command: ``readside demo`` on a machine with nothing configured.

Runs the real command as a subprocess with every ``READSIDE_*`` setting removed, so it starts its
embedded broker, PostgreSQL and Valkey; pastes each printed ``curl`` (as an HTTP request with the
same header and URL); then Ctrl-C, after which none of the processes it started may be left.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from shared.embedded import free_port

pytestmark = pytest.mark.slow

CURL = re.compile(r"^curl -s (?:-H '(?P<header>[^']+)' )?'(?P<url>[^']+)'$")
TOKEN = re.compile(r"^READSIDE_JWT_SECRET=(?P<secret>\S+) readside token <user id> --role admin$")


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (by walking /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _mentioning(text: str) -> set[int]:
    """Live processes whose command line mentions ``text`` (PostgreSQL daemonizes: not a child)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes() and _alive(int(entry.name)):
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_demo_serves_every_printed_curl_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    data = Path(tempfile.mkdtemp(prefix="readside-test-demo-"))  # outside pytest's 0700 tmp tree
    env = {k: v for k, v in os.environ.items() if not k.startswith("READSIDE_")}
    port = free_port()
    log = tmp_path / "demo.err"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "demo", "--port", str(port), "--data-dir", str(data), "--rate", "30"],
            env=env, stdout=subprocess.PIPE, stderr=err, text=True,
        )
    started: set[int] = set()
    try:
        curls: list[re.Match[str]] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                pytest.fail(f"demo exited ({proc.wait()}) before printing its curls: {log.read_text()}")
            match = CURL.match(line.strip())
            if match:
                curls.append(match)
            elif curls and not line.strip():
                if any("/v1/providers" in m["url"] for m in curls):
                    break
        assert len(curls) >= 8, [m.group(0) for m in curls]
        # the demo signs with a random secret of its run, and prints how to make more tokens
        secret = None
        while secret is None and time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                pytest.fail(f"demo exited ({proc.wait()}) before printing its token command: {log.read_text()}")
            found = TOKEN.match(line.strip())
            secret = found["secret"] if found else None
        assert secret and secret != "readside-demo-secret-change-me-in-production"
        started = _children(proc.pid) | _mentioning(str(data))
        assert len(started) >= 5  # broker, PostgreSQL, Valkey, projector, API (at least)

        bodies = {}
        for match in curls:
            # As pasted into a shell: the same header and URL.
            headers = dict([match["header"].split(": ", 1)]) if match["header"] else {}
            response = httpx.get(match["url"], headers=headers, timeout=10)
            assert response.status_code == 200, (shlex.quote(match["url"]), response.text)
            bodies[match["url"].split("?")[0].split(f":{port}")[1]] = response.json()
        assert bodies["/v1/threads/preview"]["items"], "the first curl must show a non-empty inbox"
        made = subprocess.run([sys.executable, "-m", "shared.cli", "token", "u-someone", "--role", "admin"],
                              env=env | {"READSIDE_JWT_SECRET": secret}, capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        base = curls[0]["url"].split("/v1/")[0]
        r = httpx.get(base + "/v1/admin/projections", headers={"Authorization": f"Bearer {made.stdout.strip()}"}, timeout=10)
        assert r.status_code == 200, r.text
        assert bodies["/v1/threads/summary"]["thread_count"] > 0
        assert bodies["/v1/providers"]["items"] and bodies["/v1/providers"]["total"] > 0
        assert bodies["/v1/templates"]["items"]
        assert bodies["/v1/requests/technician-views"]["data"]
        assert bodies["/v1/requests/technician-views/counts"]["counts"]["all_unsolved"] > 0
        assert {p["name"] for p in bodies["/v1/admin/projections"]["projections"]} == {
            "threads", "providers", "workflows", "requests"}
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            left = [pid for pid in started if _alive(pid)]
            for pid in left:
                os.kill(pid, signal.SIGKILL)
            shutil.rmtree(data, ignore_errors=True)
            proc.stdout.close()  # type: ignore[union-attr]
    assert proc.returncode == 0
    assert left == [], f"processes left running after Ctrl-C: {left}"
