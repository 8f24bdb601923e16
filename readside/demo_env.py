"""The running demo's settings, for the operator commands run from a second terminal.

``readside demo`` writes ``<data dir>/demo.env`` (``export READSIDE_...=...`` lines: source it in
a shell, or let the CLI read it) while it runs and removes it when it stops. ``readside status``,
``dlq``, ``load``, ``rebuild``, ``rollback`` and ``token`` run from the same directory read
``.readside/demo.env`` when it exists, for each variable not already set in the environment, and
say so on stderr. Servers (``api``, ``projector``) never read it: their configuration is explicit.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path

__all__ = ["DEFAULT_DIR", "FILE_NAME", "load", "remove", "write"]

DEFAULT_DIR = ".readside"
FILE_NAME = "demo.env"


def write(data_dir: Path, env: Mapping[str, str]) -> Path:
    """Write ``env`` as a shell-sourceable file readable by its owner only; returns its path."""
    path = data_dir / FILE_NAME
    lines = [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("# written by `readside demo` while it runs; `. " + str(path) + "` in a shell\n")
        handle.write("\n".join(lines) + "\n")
    return path


def remove(data_dir: Path) -> None:
    (data_dir / FILE_NAME).unlink(missing_ok=True)


def parse(text: str) -> dict[str, str]:
    """The ``READSIDE_*`` assignments of a file written by :func:`write`."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            if name.startswith("READSIDE_"):
                found[name] = value
    return found


def load(environ: MutableMapping[str, str], directory: Path | None = None) -> list[str]:
    """Fill ``environ`` from ``<directory or .readside>/demo.env``; returns the names it set."""
    path = (directory or Path(DEFAULT_DIR)) / FILE_NAME
    try:
        found = parse(path.read_text())
    except OSError:
        return []
    added = [name for name in sorted(found) if not environ.get(name)]
    for name in added:
        environ[name] = found[name]
    if added:
        print(f"readside: using the running demo's settings from {path}", file=sys.stderr)
    return added
