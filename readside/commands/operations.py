"""Commands an operator runs beside the servers: ``status``, ``dlq``, ``rebuild``, ``rollback``,
``token``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from readside.commands._common import CommandError, operator_database, settings_from_env
from readside.shared.errors import ConfigError, ReadsideError

__all__ = ["add_commands"]


def cmd_status(args: argparse.Namespace) -> int:
    from readside.projector.status import collect, render
    from readside.shared.jsonbytes import dumps
    from readside.shared.kafka import BrokerHeads

    settings = settings_from_env()
    if not args.verbose:  # an unreachable broker is reported in the output, once
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    async def go():  # noqa: ANN202
        async with operator_database(settings) as pool:
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

    settings = settings_from_env()

    async def go():  # noqa: ANN202
        async with operator_database(settings) as db, db.connection() as conn:
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

    settings = settings_from_env()

    async def go():  # noqa: ANN202
        async with operator_database(settings) as db, db.connection() as conn:
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
    settings = settings_from_env()

    def progress(done: int, total: int) -> None:
        if total > dlq.CHUNK:  # more than one transaction: say how far
            print(f"{done}/{total} dead letter(s) processed…", file=sys.stderr)

    async def go() -> dlq.ReplayResult:
        async with operator_database(settings) as db:
            return await dlq.replay(db, settings, ids=args.ids or None, projection=args.projection, progress=progress)

    result = asyncio.run(go())
    for letter, reason in result.failing:
        print(f"#{letter.id} {letter.projection} {letter.origin}: still failing: {reason}")
    for missing in result.missing:
        print(f"#{missing}: no such dead letter" + (f" of {args.projection}" if args.projection else "")
              + " (replayed already, or another replay holds it)")
    if result.cache_error:
        print(f"warning: cache versions not bumped yet ({result.cache_error}); kept in the cache outbox, "
              "a running projector bumps them once Redis answers", file=sys.stderr)
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

    settings = settings_from_env()
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

    settings = settings_from_env()
    if settings.jwt_algorithm != "HS256":
        raise CommandError("readside token signs HS256 tokens; with RS256 your identity provider issues them")
    if not settings.jwt_secret:
        raise ConfigError(
            "READSIDE_JWT_SECRET is not set: `readside token` signs with the API's secret, set it to the same "
            "value (a running `readside demo` prints the command with its own)"
        )
    print(make_token(settings.jwt_secret, args.sub, args.role, ttl=args.ttl))
    return 0



def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value



def add_commands(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("projection", nargs="?", help="the projection's name (`readside status` lists them)")
    p.add_argument("--all", action="store_true", help="every projection, one after the other")
    p.add_argument("--verify", action="store_true",
                   help="before the swap, compare every table with the live one; on differences ask (abort unless --yes)")
    p.add_argument("--yes", "-y", action="store_true", help="cut over even when --verify finds differences")
    p.add_argument("--max-rate", type=float, default=None, metavar="N", help="at most N events per second (default: as fast as it goes)")
    p.add_argument("--batch", type=int, default=50_000, help="events per bulk transaction (default 50000)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes for the bulk phase, the records split between them by key (default 1)")
    p.add_argument("--drop-previous", action="store_true",
                   help="drop the version the last cutover replaced (rs_prev_<name>); no rollback after that")
    p.add_argument("--cancel", action="store_true", help="stop an unfinished rebuild and drop its tables")
    p.set_defaults(fn=cmd_rebuild)

    p = sub.add_parser("rollback", help="swap the previous version of a projection back in (brought up to date first)")
    p.add_argument("projection", help="the projection's name (`readside status` lists them)")
    p.set_defaults(fn=cmd_rollback)

    p = sub.add_parser("token", help="issue a signed demo token (HS256, READSIDE_JWT_SECRET)")
    p.add_argument("sub", help="the user id the token names (its `sub` claim)")
    p.add_argument("--role", action="append", default=[], help="a role to grant (repeatable: --role technician --role admin; default none)")
    p.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default 3600)")
    p.set_defaults(fn=cmd_token)
