"""What the command modules share: the error that stops a command with a message, the settings
from the environment, and the database of an operator command."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import psycopg

from readside.shared.errors import ReadsideError
from readside.shared.settings import Settings

__all__ = ["CommandError", "operator_database", "settings_from_env"]


def settings_from_env() -> Settings:
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
async def operator_database(settings: Settings) -> AsyncIterator[_Database]:
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

