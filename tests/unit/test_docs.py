"""The documentation ships with the repository and stays true to it.

- Every relative link in ``README.md`` and ``docs/*.md`` points at a file of the repository, and
  its ``#anchor`` at a heading of that file (GitHub's slugs); nothing links outside the
  repository (``../shared/CONTRACT.md`` is not there for someone who clones it).
- What the code defines is documented: every route in ``docs/api.md``, every topic and event type
  in ``docs/events.md``, every ``READSIDE_*`` variable of the settings in the README's
  configuration table and in ``docs/deployment.md``.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from readside.schemas import PAYLOAD_TYPES, TOPICS

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~)")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks and HTML comments (where links and headings count)."""
    out, fenced = [], False
    for line in _COMMENT.sub("", text).splitlines():
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed (``-`` and
    ``_`` kept), spaces to ``-``."""
    text = _CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = re.sub(r"[*_]{2}|(?<!\w)[*_]|[*_](?!\w)", "", text)  # emphasis, not snake_case
    text = text.strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _prose(path.read_text()):
        found = _HEADING.match(line)
        if not found:
            continue
        base = slug(found.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    text = "\n".join(_prose(path.read_text()))
    text = _CODE_SPAN.sub("", text)  # `[x](y)` inside code is not a link
    return _LINK.findall(text)


def _relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)  # http:, https:, mailto: ...


def test_slugs_follow_github() -> None:
    assert slug("Set-up on a fresh machine (Python 3.11)") == "set-up-on-a-fresh-machine-python-311"
    assert slug("`GET /v1/threads/{thread_id}/messages`") == "get-v1threadsthread_idmessages"
    assert slug("The projector's endpoint and metrics") == "the-projectors-endpoint-and-metrics"
    assert slug("Rebuild and replay (`readside rebuild`, `readside rollback`)") == (
        "rebuild-and-replay-readside-rebuild-readside-rollback"
    )


def test_the_docs_exist() -> None:
    names = {p.name for p in DOCS}
    assert {"events.md", "api.md", "operations.md", "deployment.md", "publishing.md", "architecture.md"} <= names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(doc: Path) -> None:
    broken = []
    for target in links(doc):
        if not _relative(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / unquote(file_part)).resolve() if file_part else doc
        if not dest.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {dest.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_doc_points_outside_the_repository(doc: Path) -> None:
    # Links are checked above; this catches the plain mentions too (a path in prose or a table).
    assert "../shared" not in doc.read_text()
    assert "shared/CONTRACT.md" not in doc.read_text() and "ARCHITECTURE.md" not in doc.read_text()


def test_every_route_is_in_the_api_doc() -> None:
    api = (ROOT / "docs" / "api.md").read_text()
    routes = re.findall(r'route\("([^"]+)"', (ROOT / "api" / "app.py").read_text())
    assert len(routes) >= 10
    missing = [r for r in routes if f"GET {r}`" not in api and f"`{r}`" not in api and f", {r}`" not in api]
    assert not missing, f"routes not in docs/api.md: {missing}"


def test_every_topic_and_event_type_has_its_place_in_the_events_doc() -> None:
    events = (ROOT / "docs" / "events.md").read_text()
    headings = {slug(m.group(2)) for m in map(_HEADING.match, _prose(events)) if m}
    for event_type in PAYLOAD_TYPES:
        assert slug(f"`{event_type}`") in headings, f"{event_type} has no heading in docs/events.md"
    for topic, (key, _) in TOPICS.items():
        assert f"| `{topic}` | `{key}` |" in events, f"{topic} is not in the topics table"


def _configuration_table(text: str) -> set[str]:
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(READSIDE_[A-Z_]+)` \|", section, re.M))


def test_every_setting_is_documented() -> None:
    code = set(re.findall(r"READSIDE_[A-Z_]+", (ROOT / "shared" / "settings.py").read_text()))
    readme = _configuration_table((ROOT / "README.md").read_text())
    deployment = _configuration_table((ROOT / "docs" / "deployment.md").read_text())
    assert code <= readme, f"not in the README's configuration table: {sorted(code - readme)}"
    assert code <= deployment, f"not in docs/deployment.md's configuration table: {sorted(code - deployment)}"
