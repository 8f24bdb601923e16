"""``GET /v1/img/avatar/{id}`` (public): the image of an avatar a list shipped as this route.

Lists never ship a ``data:`` avatar (CONTRACT §2): thread previews ship
``/v1/img/avatar/<user id>``, provider listings ``/v1/img/avatar/<provider id>``, the id
percent-encoded as one path segment (``readside.readmodels.avatars.fold.route_url``). This answers
the bytes the projector decoded from that URL (``user_avatars``, ``provider_avatars``) with their
own media type.

- The one route serves both id spaces: a user's avatar first, else a provider's — one statement,
  two primary-key lookups (``readside.readmodels.avatars.queries``), no Redis (no key per request,
  see ``readside.api.serving``). docs/decisions.md says why and what a colliding id does.
- Public (an ``<img>`` tag sends no ``Authorization``): ``Cache-Control: public, max-age=30``,
  a weak ETag from the bytes (304 on ``If-None-Match``, which then fetches no bytes), and headers
  that keep the bytes an image: ``X-Content-Type-Options: nosniff``, a sandboxing
  ``Content-Security-Policy`` (an ``image/svg+xml`` opened directly runs no script on the API's
  origin) and ``Cross-Origin-Resource-Policy: cross-origin`` (a frontend on another origin may
  embed it).
- An unknown id, one longer than 200 characters or with a control character: a problem+json 404.
  Any query parameter is a 400, as everywhere.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from readside.api.http import Context, Timing
from readside.api.openapi import Operation, documented
from readside.api.params import MAX_LENGTH, Query
from readside.api.problems import not_found
from readside.readmodels.avatars import queries
from readside.schemas import id_problem

__all__ = ["CACHE_CONTROL", "OPERATION", "avatar"]

CACHE_CONTROL = "public, max-age=30"  # as every public answer: a replaced image is revalidated within 30 s
HEADERS = {
    "Cache-Control": CACHE_CONTROL,
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
    "Cross-Origin-Resource-Policy": "cross-origin",
}
MAX_TAGS = 16  # entity tags of If-None-Match considered (a client revalidates one)

def _tags(request: Request) -> list[str]:
    """The opaque parts of ``If-None-Match``'s entity tags (weak comparison: ``W/`` ignored)."""
    header = request.headers.get("if-none-match") or ""
    out = []
    for part in header.split(",")[:MAX_TAGS]:
        tag = part.strip().removeprefix("W/")
        if len(tag) >= 2 and tag[0] == tag[-1] == '"':
            out.append(tag[1:-1])
    return out


OPERATION = Operation(
    "An avatar image",
    "The image behind an `avatar_url` of `/v1/img/avatar/<id>` (what a `data:` avatar becomes in the "
    "thread previews and the provider listings): the bytes and media type the `data:` URL carried. A user id "
    "is looked up first, then a provider id. `X-Content-Type-Options: nosniff` and a sandboxing "
    "`Content-Security-Policy` come with it.",
    auth=None,
    body={"description": "the image's bytes"},
    media="image/*",
    cache_control=CACHE_CONTROL,
    errors={
        404: "No image for the id: unknown, not a `data:` avatar, not `image/*`, undecodable, over 256 KiB, "
             "or an id over 200 characters",
        503: "PostgreSQL unreachable, or the read tables not migrated yet",
    },
    path_params={"avatar_id": "a user id or a provider id, percent-encoded (it may hold an encoded `/`)"},
    etag=True,
)


@documented(OPERATION)
async def avatar(request: Request, ctx: Context, timing: Timing) -> Response:
    owner: str = request.path_params["avatar_id"]
    if id_problem(owner) is not None:  # no such id can exist (the decoder's own rule)
        raise not_found(f"no avatar {owner[:MAX_LENGTH]!r}")
    Query(request, frozenset())
    async with timing.connection(ctx.pool) as conn:
        row = await queries.find(conn, owner, _tags(request))
    if row is None:
        raise not_found(f"no avatar {owner!r}")
    media_type, digest, data = row
    headers = {"ETag": f'W/"{digest}"', **HEADERS}
    if data is None:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)
