"""``readside``: the one command line — demo, projector, api, migrate, load, schema, openapi,
asyncapi, status, dlq, token, rebuild, rollback."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any, AsyncIterator, Awaitable, Callable

import psycopg

from readside.shared import logs
from readside.shared.errors import ConfigError, ReadsideError
from readside.shared.settings import Settings

__all__ = ["main"]


def _settings() -> Settings:
    return Settings.from_env()


class CommandError(ReadsideError):
    """Stops a command with a message that says what to do, and exit status 1."""


class _Database:
    """Connections for an operator command: one at a time, opened directly, so an unreachable
    server fails at once with libpq's own reason (a pool would retry in the background)."""

    def __init__(self, url: str) -> None:
        self.url = url

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=5, options="-c TimeZone=UTC"
        )
        async with conn:
            yield conn


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[_Database]:
    """The database of an operator command; one that is unreachable or was never migrated
    becomes a :class:`CommandError` naming the fix."""
    where = settings.database_url.split("@")[-1]
    try:
        yield _Database(settings.database_url)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CommandError(f"cannot reach PostgreSQL at {where}: {reason}; check READSIDE_DATABASE_URL") from None
    except psycopg.errors.UndefinedColumn:
        raise CommandError(f"the tables in {where} are from an older version: run `readside migrate` first") from None
    except psycopg.errors.UndefinedTable:
        raise CommandError(
            f"no Readside tables in {where} yet: run `readside migrate` (or start the projector) first"
        ) from None


def cmd_migrate(args: argparse.Namespace) -> int:
    from readside.projector.service import select
    from readside.shared.db import migrate

    migrate(_settings().database_url, select(args.only))
    print("migrated")
    return 0


def cmd_projector(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from readside.projector.service import run_projector

    settings = _settings()
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
    _settings().require_keys()  # fail fast on bad configuration or missing keys, before the server starts
    _check_port_free(args.host, args.port)
    run("readside.serve:app_from_env", args.host, args.port, args.workers)  # uvicorn with the READSIDE_HTTP_* bounds
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from readside.shared.kafka import CONTRACT_TOPICS, create_topics
    from readside.load import run_load

    settings = _settings()

    async def go() -> int:
        names = [settings.topic_prefix + t for t in CONTRACT_TOPICS]
        await create_topics(settings.kafka_bootstrap, names + [n + ".dlq" for n in names])
        return await run_load(
            bootstrap=settings.kafka_bootstrap, prefix=settings.topic_prefix, rate=args.rate,
            duration=args.duration, seed=args.seed,
        )

    sent = asyncio.run(go())
    print(f"sent {sent} events", file=sys.stderr)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from readside.schemas import envelope_json_schema

    return _write_json(envelope_json_schema(), args.out)


def cmd_openapi(args: argparse.Namespace) -> int:
    import secrets
    from dataclasses import replace

    from readside.api.openapi import openapi_document
    from readside.serve import create_app

    # The document depends on the routes (is /metrics on the public port?) and the topic prefix,
    # not on keys: an app made with throwaway ones (nothing connects until it serves).
    settings = Settings.from_env()
    app = create_app(replace(settings, jwt_algorithm="HS256", jwt_secret=secrets.token_hex(32),
                             cursor_secret=secrets.token_hex(32)))
    return _write_json(openapi_document(app.routes, prefix=settings.topic_prefix), args.out)


def cmd_asyncapi(args: argparse.Namespace) -> int:
    from readside.schemas.asyncapi import asyncapi_document

    return _write_json(asyncapi_document(prefix=Settings.from_env().topic_prefix), args.out)


def _write_json(document: object, out: str) -> int:
    import orjson

    text = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    if out == "-":
        sys.stdout.buffer.write(text + b"\n")
    else:
        with open(out, "wb") as fh:
            fh.write(text + b"\n")
        print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from readside.projector.status import collect, render
    from readside.shared.kafka import BrokerHeads
    from readside.shared.jsonbytes import dumps

    settings = _settings()
    if not args.verbose:  # an unreachable broker is reported in the output, once
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    async def go():  # noqa: ANN202
        async with _database(settings) as pool:
            return await collect(
                pool, BrokerHeads(settings.kafka_bootstrap), prefix=settings.topic_prefix, stall_after=settings.stall_after
            )

    status = asyncio.run(go())
    if args.json:
        print(dumps(status.as_json()).decode())
    else:
        print(render(status, settings.kafka_bootstrap))
    return 0


def cmd_dlq_list(args: argparse.Namespace) -> int:
    from readside.projector import dlq
    from readside.shared.jsonbytes import dumps

    settings = _settings()

    async def go():  # noqa: ANN202
        async with _database(settings) as db, db.connection() as conn:
            return await dlq.list_dead_letters(conn, args.projection, args.limit)

    letters, total = asyncio.run(go())
    if args.json:
        items = [{k: v for k, v in dlq.show_json(d).items() if k not in ("value_json", "value_text")} for d in letters]
        print(dumps({"dead_letters": items, "total": total}).decode())
    else:
        print(dlq.render_list(letters, total, args.projection))
    return 0


def cmd_dlq_show(args: argparse.Namespace) -> int:
    from readside.projector import dlq
    from readside.shared.jsonbytes import dumps

    settings = _settings()

    async def go():  # noqa: ANN202
        async with _database(settings) as db, db.connection() as conn:
            return await dlq.get(conn, args.id)

    letter = asyncio.run(go())
    if letter is None:
        raise CommandError(f"no dead letter #{args.id} (replayed already?); `readside dlq list` shows the ids")
    print(dumps(dlq.show_json(letter)).decode() if args.json else dlq.render_show(letter))
    return 0


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    from readside.projector import dlq

    if bool(args.ids) == bool(args.all):
        raise CommandError("say which dead letters: their ids, or --all (either may be narrowed by --projection)")
    settings = _settings()

    def progress(done: int, total: int) -> None:
        if total > dlq.CHUNK:  # more than one transaction: say how far
            print(f"{done}/{total} dead letter(s) processed…", file=sys.stderr)

    async def go() -> dlq.ReplayResult:
        async with _database(settings) as db:
            return await dlq.replay(db, settings, ids=args.ids or None, projection=args.projection, progress=progress)

    result = asyncio.run(go())
    for letter, reason in result.failing:
        print(f"#{letter.id} {letter.projection} {letter.origin}: still failing: {reason}")
    for missing in result.missing:
        print(f"#{missing}: no such dead letter" + (f" of {args.projection}" if args.projection else "")
              + " (replayed already, or another replay holds it)")
    if result.cache_error:
        print(f"warning: cache versions not bumped ({result.cache_error}); cached bodies expire within 5 minutes", file=sys.stderr)
    summary = f"replayed {result.replayed}, still failing {len(result.failing)}, duplicates skipped {result.duplicates}"
    if result.ignored:
        summary += f", dropped {result.ignored} of a type the projection no longer handles"
    print(summary)
    return 1 if result.failing or result.missing else 0


def _until_signal(make: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``make()``; SIGTERM cancels it like Ctrl-C does (the caller sees CancelledError)."""

    async def main() -> Any:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await make()

    return asyncio.run(main())


def _ask(question: str) -> bool:
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _rebuild_each(args: argparse.Namespace, kind: str) -> int:
    from readside.projector.rebuild import Options, RebuildAborted, Rebuilder, mark_interrupted
    from readside.projector.service import select

    settings = _settings()
    if kind == "rebuild" and args.all == bool(args.projection):
        raise ConfigError("name one projection, or pass --all (not both)")
    projections = select(None if getattr(args, "all", False) else [args.projection])
    options = Options(
        verify=getattr(args, "verify", False),
        yes=getattr(args, "yes", False),
        max_rate=getattr(args, "max_rate", None),
        bulk_batch=getattr(args, "batch", 50_000),
        workers=getattr(args, "workers", 1),
        confirm=_ask if sys.stdin.isatty() else None,
    )
    for projection in projections:
        rebuilder = Rebuilder(settings, projection, options)
        if kind == "rollback":
            action = rebuilder.rollback
        elif args.drop_previous:
            action = rebuilder.drop_previous
        elif args.cancel:
            action = rebuilder.cancel
        else:
            action = rebuilder.rebuild
        try:
            print(_until_signal(action))
        except RebuildAborted as exc:
            print(f"readside: {exc}", file=sys.stderr)
            return 1
        except (KeyboardInterrupt, asyncio.CancelledError):
            mark_interrupted(settings, projection.name, kind)
            print(f"\nreadside: interrupted; progress is saved — `readside {kind} {projection.name}` resumes", file=sys.stderr)
            return 130
        except ConfigError:
            raise
        except ReadsideError as exc:
            print(f"readside: {exc}", file=sys.stderr)
            return 3
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    return _rebuild_each(args, "rebuild")


def cmd_rollback(args: argparse.Namespace) -> int:
    return _rebuild_each(args, "rollback")


def cmd_token(args: argparse.Namespace) -> int:
    from readside.api.auth import make_token

    settings = _settings()
    if settings.jwt_algorithm != "HS256":
        raise CommandError("readside token signs HS256 tokens; with RS256 your identity provider issues them")
    if not settings.jwt_secret:
        raise ConfigError(
            "READSIDE_JWT_SECRET is not set: `readside token` signs with the API's secret, set it to the same "
            "value (a running `readside demo` prints the command with its own)"
        )
    print(make_token(settings.jwt_secret, args.sub, args.role, ttl=args.ttl))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from readside.demo import run_demo

    return run_demo(rate=args.rate, port=args.port, data_dir=args.data_dir, reset=args.reset)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


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

    p = sub.add_parser("schema", help="write the JSON Schema of the envelope and every payload")
    p.add_argument("--out", default="-", help="file (default: stdout)")
    p.set_defaults(fn=cmd_schema)

    p = sub.add_parser("openapi", help="write the OpenAPI 3.1 document of the query API (also served at /openapi.json)")
    p.add_argument("--out", default="-", help="file (default: stdout)")
    p.set_defaults(fn=cmd_openapi)

    p = sub.add_parser("asyncapi", help="write the AsyncAPI 3.0 document of the event topics")
    p.add_argument("--out", default="-", help="file (default: stdout)")
    p.set_defaults(fn=cmd_asyncapi)

    p = sub.add_parser(
        "status",
        help="per projection and partition: state, checkpoint, high watermark, lag, dead letters",
        description="Per projection: version, state (live, rebuilding, stalled), lag, dead letters, "
        "last batch; per partition: checkpoint, high watermark (from the broker when it answers, "
        "else as last recorded by the projector), lag in events and seconds. A projection is "
        "stalled when it has lag and its checkpoints have not moved for READSIDE_STALL_AFTER seconds.",
    )
    p.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("dlq", help="dead letters: list, show, replay after a fix")
    dlq_sub = p.add_subparsers(dest="dlq_command", required=True)
    q = dlq_sub.add_parser("list", help="the newest dead letters: origin, size, reason")
    q.add_argument("--projection", help="only this projection's (default: every projection's)")
    q.add_argument("--limit", type=_positive, default=50, help="how many (default 50)")
    q.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    q.set_defaults(fn=cmd_dlq_list)
    q = dlq_sub.add_parser("show", help="one dead letter: reason, origin, key, the original value")
    q.add_argument("id", type=_positive, help="the dead letter's id (see `readside dlq list`)")
    q.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    q.set_defaults(fn=cmd_dlq_show)
    q = dlq_sub.add_parser(
        "replay",
        help="re-decode with today's schemas and apply those that pass (once each)",
        description="Re-decode dead letters with the current schemas. Those that pass are applied "
        "through their projection (with the dedupe table: an event already applied is skipped) and "
        "removed; those that still fail stay, with the new reason. Exit status 1 when some still fail.",
    )
    q.add_argument("ids", nargs="*", type=_positive, help="dead letter ids (see `readside dlq list`)")
    q.add_argument("--all", action="store_true", help="every dead letter")
    q.add_argument("--projection", help="only this projection's (default: every projection's)")
    q.set_defaults(fn=cmd_dlq_replay)

    p = sub.add_parser(
        "rebuild",
        help="build a projection's next version from offset 0 beside the live one, then swap it in",
        description="Build the next version of a projection into shadow tables (schema rs_build_<name>) from "
        "offset 0 of its topics while the live version keeps serving, catch up with the live projector, then "
        "swap the tables atomically. Resumable: run it again after Ctrl-C or a crash. Topics need full "
        "history (retention.ms=-1).",
    )
    p.add_argument("projection", nargs="?", help="the projection (threads, providers, workflows, requests)")
    p.add_argument("--all", action="store_true", help="every projection, one after the other")
    p.add_argument("--verify", action="store_true",
                   help="before the swap, compare every table with the live one; on differences ask (abort unless --yes)")
    p.add_argument("--yes", "-y", action="store_true", help="cut over even when --verify finds differences")
    p.add_argument("--max-rate", type=float, default=None, metavar="N", help="at most N events per second (default: as fast as it goes)")
    p.add_argument("--batch", type=int, default=50_000, help="events per bulk transaction (default 50000)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes for the bulk phase, partitions split between them (default 1)")
    p.add_argument("--drop-previous", action="store_true",
                   help="drop the version the last cutover replaced (rs_prev_<name>); no rollback after that")
    p.add_argument("--cancel", action="store_true", help="stop an unfinished rebuild and drop its tables")
    p.set_defaults(fn=cmd_rebuild)

    p = sub.add_parser("rollback", help="swap the previous version of a projection back in (brought up to date first)")
    p.add_argument("projection", help="the projection (threads, providers, workflows, requests)")
    p.set_defaults(fn=cmd_rollback)

    p = sub.add_parser("token", help="issue a signed demo token (HS256, READSIDE_JWT_SECRET)")
    p.add_argument("sub", help="the user id the token names (its `sub` claim)")
    p.add_argument("--role", action="append", default=[], help="a role to grant (repeatable: --role technician --role admin; default none)")
    p.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default 3600)")
    p.set_defaults(fn=cmd_token)
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
