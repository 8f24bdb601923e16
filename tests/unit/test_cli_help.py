"""`readside -h` and `readside <cmd> -h`: every option says what it does and, where it has a
default, what the default is; `readside --version` names the installed version."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import version

import pytest

from readside.cli import build_parser


def _parsers(parser: argparse.ArgumentParser, path: str = "readside") -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, f"{path} {name}")
    return found


PARSERS = _parsers(build_parser())


@pytest.mark.parametrize("path,parser", PARSERS, ids=[p for p, _ in PARSERS])
def test_every_option_has_help_and_states_its_default(path: str, parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{path}: {name} has no help text"
        takes_value = action.nargs != 0 and action.option_strings and not isinstance(action, argparse._StoreTrueAction)
        if takes_value and action.required is False:
            assert "default" in action.help, f"{path}: {name} does not say its default: {action.help!r}"


def test_version_names_the_installed_package() -> None:
    out = subprocess.run([sys.executable, "-m", "readside.cli", "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert out.stdout.strip() == f"readside {version('readside')}"
