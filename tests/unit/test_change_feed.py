"""The change feed's message format: one JSON array of scopes per bump, never split on a delimiter."""

from __future__ import annotations

import pytest

from readside.api.changes import _scopes


@pytest.mark.parametrize(
    ("data", "scopes"),
    [
        pytest.param(b'["viewer:u-1","thread:t-1"]', ["viewer:u-1", "thread:t-1"], id="array"),
        pytest.param(b'["thread:t-x\\nviewer:u-victim"]', ["thread:t-x\nviewer:u-victim"], id="newline-stays-inside"),
        pytest.param(b"viewer:u-1\nviewer:u-2", [], id="old-newline-format-dropped"),
        pytest.param(b'{"scope":"viewer:u-1"}', [], id="not-an-array"),
        pytest.param(b'["viewer:u-1", 7]', [], id="not-all-strings"),
        pytest.param(b"\xff", [], id="not-json"),
    ],
)
def test_a_message_is_a_json_array_of_scopes_or_nothing(data: bytes, scopes: list[str]) -> None:
    assert _scopes(data) == scopes
