"""Single flight: one call at a time per key, its result shared by every caller that came meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

__all__ = ["shared_call"]

T = TypeVar("T")


async def shared_call(flights: dict, key: Hashable, work: Callable[[], Awaitable[T]], *, grace: float = 0.0) -> T:
    """``await work()`` unless a call for ``key`` is in flight in ``flights``: then its result (or
    its exception). A caller that gives up (cancelled) does not cancel the flight the others wait
    on. With ``grace``, the result stays shared that many seconds after it lands (a caller whose
    lookup missed just before would otherwise start the work again)."""
    flight = flights.get(key)
    if flight is not None:
        return await asyncio.shield(flight)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    flights[key] = future

    def land() -> None:
        if flights.get(key) is future:
            del flights[key]

    try:
        result = await work()
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: waiters get it, nobody logs "never retrieved"
        land()
        raise
    future.set_result(result)
    if grace > 0:
        loop.call_later(grace, land)
    else:
        land()
    return result
