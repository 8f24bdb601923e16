"""``readside``: the one command line — demo, projector, api, migrate, load, schema, openapi,
asyncapi, status, dlq, token, rebuild, rollback."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from readside.commands import documents, operations, servers
from readside.commands._common import CommandError
from readside.shared import logs
from readside.shared.errors import ConfigError, ReadsideError

__all__ = ["build_parser", "main"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("readside")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="readside", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (same as READSIDE_LOG_LEVEL=DEBUG)")
    parser.add_argument("--version", action="version", version=f"readside {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    servers.add_commands(sub)
    documents.add_commands(sub)
    operations.add_commands(sub)
    return parser


# Commands an operator runs beside a server: they may take a running demo's settings.
_OPERATOR_COMMANDS = frozenset({"status", "dlq", "load", "rebuild", "rollback", "token", "migrate"})


def _stop_before_work(signum: int, frame: object) -> None:
    raise SystemExit(0)  # nothing has started yet: stopping now loses nothing


def main(argv: list[str] | None = None) -> int:
    # SIGTERM while a command is still importing or connecting is a clean stop, not a kill by the
    # default handler; each long-running command then installs its own graceful stop.
    signal.signal(signal.SIGTERM, _stop_before_work)
    args = build_parser().parse_args(argv)
    if args.command in _OPERATOR_COMMANDS:
        from readside import demo_env

        demo_env.load(os.environ)  # beside a running demo, reach it without exporting anything
    try:
        logs.configure(os.environ, verbose=args.verbose)
        return args.fn(args)
    except ConfigError as exc:
        print(f"readside: configuration error: {exc}", file=sys.stderr)
        return 2
    except (CommandError, ReadsideError) as exc:  # what failed and what to do, in one line
        print(f"readside: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

