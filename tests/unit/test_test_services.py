"""The suite's choice of services (READSIDE_TEST_SERVICES): a bad choice, or containers where they
cannot run, stops the run at once with one line naming the fix — never a silent fallback."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, value: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "READSIDE_TEST_SERVICES": value, "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/test_logs.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_an_unknown_choice_is_refused(tmp_path: Path) -> None:
    out = _run(tmp_path, "docker")
    assert out.returncode == 4, out.stdout + out.stderr  # pytest's usage error
    assert "READSIDE_TEST_SERVICES='docker': use one of embedded, containers" in out.stderr


def test_containers_where_they_cannot_run_stop_the_run_with_the_fix(tmp_path: Path) -> None:
    out = _run(tmp_path, "containers")
    assert out.returncode == 4, out.stdout + out.stderr
    assert "passed" not in out.stdout
    if importlib.util.find_spec("testcontainers") is None:
        assert "needs testcontainers: pip install -e '.[test,containers]'" in out.stderr
    else:
        assert "no Docker engine answers" in out.stderr and "unset READSIDE_TEST_SERVICES" in out.stderr


def test_the_default_is_the_embedded_servers(tmp_path: Path) -> None:
    assert _run(tmp_path, "").returncode == 0
