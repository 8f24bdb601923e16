"""Commands that write a document: ``schema``, ``openapi``, ``asyncapi``."""

from __future__ import annotations

import argparse
import sys

from readside.shared.settings import Settings

__all__ = ["add_commands"]


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



def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="write the JSON Schema of the envelope and every payload")
    p.add_argument("--out", default="-", help="file (default: stdout)")
    p.set_defaults(fn=cmd_schema)

    p = sub.add_parser("openapi", help="write the OpenAPI 3.1 document of the query API (also served at /openapi.json)")
    p.add_argument("--out", default="-", help="file (default: stdout)")
    p.set_defaults(fn=cmd_openapi)

    p = sub.add_parser("asyncapi", help="write the AsyncAPI 3.0 document of the event topics")
    p.add_argument("--out", default="-", help="file (default: stdout)")
    p.set_defaults(fn=cmd_asyncapi)

