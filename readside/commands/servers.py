"""The commands that run the stack or feed it: ``demo``, ``projector``, ``api``, ``migrate``, ``load``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from readside.commands._common import CommandError, settings_from_env
from readside.shared.errors import ConfigError

__all__ = ["add_commands"]


def cmd_migrate(args: argparse.Namespace) -> int:
    from readside.projector.service import select
    from readside.shared.db import migrate

    migrate(settings_from_env().database_url, select(args.only))
    print("migrated")
    return 0


def cmd_projector(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from readside.projector.service import run_projector

    settings = settings_from_env()
    if args.port is not None:
        settings = replace(settings, projector_port=args.port)
    if args.host is not None:
        settings = replace(settings, projector_host=args.host)
    asyncio.run(run_projector(settings, args.only))
    return 0


def _check_port_free(host: str, port: int) -> None:
    """One clear line for a port in use or an address not of this machine, before the server starts."""
    from readside.shared.listen import listening_socket

    try:
        listening_socket(host, port, setting="--port", otherwise="stop what holds it, or pass another --port or --host").close()
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def cmd_api(args: argparse.Namespace) -> int:
    from readside.api.server import run

    # The workers configure their logging from the environment (readside.serve.app_from_env).
    if args.access_log:
        os.environ["READSIDE_ACCESS_LOG"] = "1"
    if args.verbose:
        os.environ["READSIDE_LOG_LEVEL"] = "DEBUG"
    settings_from_env().require_keys()  # fail fast on bad configuration or missing keys, before the server starts
    _check_port_free(args.host, args.port)
    run("readside.serve:app_from_env", args.host, args.port, args.workers)  # uvicorn with the READSIDE_HTTP_* bounds
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from readside.load import run_load
    from readside.schemas.registry import contract_topics
    from readside.shared.kafka import create_topics

    settings = settings_from_env()

    async def go() -> int:
        await create_topics(settings.kafka_bootstrap, contract_topics(settings.topic_prefix))
        return await run_load(
            bootstrap=settings.kafka_bootstrap, prefix=settings.topic_prefix, rate=args.rate,
            duration=args.duration, seed=args.seed,
        )

    sent = asyncio.run(go())
    print(f"sent {sent} events", file=sys.stderr)
    return 0



def cmd_demo(args: argparse.Namespace) -> int:
    from readside.demo import run_demo

    return run_demo(rate=args.rate, port=args.port, data_dir=args.data_dir, reset=args.reset)



def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole stack with embedded servers and a live event stream")
    p.add_argument("--rate", type=float, default=20.0, help="synthetic events per second (default 20)")
    p.add_argument("--port", type=int, default=8000, help="API port (default 8000)")
    p.add_argument("--data-dir", default=".readside", help="where embedded servers keep data (default .readside)")
    p.add_argument("--reset", action="store_true", help="drop the read tables of a configured database first")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("projector", help="consume the topics into the read tables")
    p.add_argument("--only", nargs="*", help="projection names (default: all)")
    p.add_argument("--port", type=int, help="serve /healthz, /readyz, /metrics here (default: READSIDE_PROJECTOR_PORT; 0: none)")
    p.add_argument("--host", help="address of that endpoint (default: READSIDE_PROJECTOR_HOST, 127.0.0.1)")
    p.set_defaults(fn=cmd_projector)

    p = sub.add_parser("api", help="serve the query API")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="server processes (default 1; about one per core)")
    p.add_argument("--access-log", action="store_true",
                   help="log one line per request: method, path, status, ms, cache (default: READSIDE_ACCESS_LOG, off)")
    p.set_defaults(fn=cmd_api)

    p = sub.add_parser("migrate", help="create or update the read tables")
    p.add_argument("--only", nargs="*", help="projection names (default: all)")
    p.set_defaults(fn=cmd_migrate)

    p = sub.add_parser("load", help="publish a realistic synthetic event stream to the broker")
    p.add_argument("--rate", type=float, default=50.0, help="events per second (default 50)")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    p.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable stream (default: a new one each run)")
    p.set_defaults(fn=cmd_load)
