"""The README's first command, exactly as written, on a machine with nothing configured.

The README's demo line (``python3 -m venv .venv && . .venv/bin/activate && pip install -e . &&
readside demo``) runs in a fresh copy of the repository, so it installs the base package into a
virtualenv of its own (no test extras: a module the product imports from a test-only dependency
fails here). Every ``READSIDE_*`` setting is removed, so the demo starts its embedded broker,
PostgreSQL and Valkey. Each printed ``curl`` is pasted (as an HTTP request with the same header and
URL), ``readside status`` runs as from a second terminal, then the demo is stopped with Ctrl-C (a
SIGINT to its process group, as a terminal sends it) or with SIGTERM (to the demo process, as a
service manager sends it), after which none of the processes it started may be left.
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
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from readside.embedded import free_port
from readside.readmodels.registry import REGISTRY

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


def _readme_demo_line() -> str:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    lines = [line for line in readme.splitlines() if line.startswith("python3 -m venv") and line.endswith("readside demo")]
    assert len(lines) == 1, "the README must give exactly one demo command line"
    return lines[0]


@pytest.fixture(scope="module")
def fresh_copy() -> Iterator[Path]:
    """The repository's files (as in the work tree) in a new folder: a fresh clone, uninstalled."""
    root = Path(__file__).parents[2]
    files = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    copy = Path(tempfile.mkdtemp(prefix="readside-test-demo-"))  # outside pytest's 0700 tmp tree
    for name in filter(None, files.decode().split("\0")):
        if (root / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, copy / name)
    yield copy
    shutil.rmtree(copy, ignore_errors=True)


def _demo_pid(shell: int) -> int:
    for pid in [shell, *sorted(_children(shell))]:  # bash may exec the last command itself
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"demo" in argv and any(a.endswith(b"readside") for a in argv):
            return pid
    raise AssertionError("no `readside demo` process under the shell")


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_readme_demo_line_serves_every_printed_curl_and_stops_cleanly(fresh_copy: Path, tmp_path: Path, stop: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("READSIDE_") and k != "VIRTUAL_ENV"}
    port = free_port()
    log = tmp_path / "demo.err"
    line = f"{_readme_demo_line()} --port {port} --rate 30"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            ["bash", "-c", line], cwd=fresh_copy, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
            start_new_session=True,  # its own process group, as a terminal gives a foreground job
        )
    data = fresh_copy / ".readside"
    started: set[int] = set()
    left: list[int] = []
    try:
        curls: list[re.Match[str]] = []
        deadline = time.monotonic() + 600  # includes the pip install of a fresh virtualenv
        while time.monotonic() < deadline:
            out = proc.stdout.readline()  # type: ignore[union-attr]
            if not out:
                pytest.fail(f"demo exited ({proc.wait()}) before printing its curls: {log.read_text()[-4000:]}")
            match = CURL.match(out.strip())
            if match:
                curls.append(match)
            elif curls and not out.strip():
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
        made = subprocess.run([sys.executable, "-m", "readside.cli", "token", "u-someone", "--role", "admin"],
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
        assert {p["name"] for p in bodies["/v1/admin/projections"]["projections"]} == set(REGISTRY)

        # A second terminal in the same directory, nothing exported: the CLI finds the demo.
        status = subprocess.run(
            [str(fresh_copy / ".venv/bin/readside"), "status", "--json"], cwd=fresh_copy, env=env,
            capture_output=True, text=True, timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert {p["name"] for p in orjson.loads(status.stdout)["projections"]} == set(REGISTRY)
        assert "demo.env" in status.stderr  # it says where its settings came from
        second = subprocess.run(
            [str(fresh_copy / ".venv/bin/readside"), "token", "u-other", "--role", "admin"], cwd=fresh_copy, env=env,
            capture_output=True, text=True, timeout=60,
        )
        assert second.returncode == 0, second.stderr
        r = httpx.get(f"{base}/v1/admin/projections", headers={"Authorization": f"Bearer {second.stdout.strip()}"}, timeout=10)
        assert r.status_code == 200, r.text
    finally:
        if proc.poll() is None:
            if stop == "ctrl-c":
                os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
            else:
                os.kill(_demo_pid(proc.pid), signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            deadline = time.monotonic() + 10  # a child's own exit may lag its parent's by a moment
            while (left := [pid for pid in started if _alive(pid)]) and time.monotonic() < deadline:
                time.sleep(0.1)
            for pid in left:
                os.kill(pid, signal.SIGKILL)
            proc.stdout.close()  # type: ignore[union-attr]
    assert proc.returncode == 0, log.read_text()[-4000:]
    assert left == [], f"processes left running after {stop}: {left}"
    assert not (data / "demo.env").exists(), "the demo removes its settings file when it stops"
