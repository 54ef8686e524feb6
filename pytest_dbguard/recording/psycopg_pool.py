"""psycopg-pool's methods wrapped so that the psycopg probe sees opens, checkouts and returns.

The wrappers are module functions so each closes over exactly what it needs.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .psycopg import PsycopgProbe


def sync_getconn(probe: PsycopgProbe, original: Any, pool_timeout: type[BaseException]) -> Any:
    def getconn(self: Any, timeout: float | None = None) -> Any:
        caller = sys._getframe(1)
        try:
            conn = original(self, timeout)
        except pool_timeout:
            probe.timed_out(self, caller, timeout)
            raise
        probe.checked_out(self, conn, caller)
        return conn

    getconn.__doc__ = original.__doc__
    return getconn


def sync_putconn(probe: PsycopgProbe, original: Any) -> Any:
    def putconn(self: Any, conn: Any) -> None:
        probe.returned(self, conn)
        original(self, conn)

    putconn.__doc__ = original.__doc__
    return putconn


def sync_open(probe: PsycopgProbe, original: Any) -> Any:
    def open(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: A001 - the pool's API
        was_closed = self.closed
        original(self, *args, **kwargs)
        if was_closed:
            probe.pool_opened(self, sys._getframe(1))

    open.__doc__ = original.__doc__
    return open


def wrap_init(probe: PsycopgProbe, original: Any) -> Any:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if not self.closed:
            probe.pool_opened(self, sys._getframe(1))

    __init__.__doc__ = original.__doc__
    return __init__


def async_getconn(probe: PsycopgProbe, original: Any, pool_timeout: type[BaseException]) -> Any:
    async def getconn(self: Any, timeout: float | None = None) -> Any:
        caller = sys._getframe(1)
        try:
            conn = await original(self, timeout)
        except pool_timeout:
            probe.timed_out(self, caller, timeout)
            raise
        probe.checked_out(self, conn, caller)
        return conn

    getconn.__doc__ = original.__doc__
    return getconn


def async_putconn(probe: PsycopgProbe, original: Any) -> Any:
    async def putconn(self: Any, conn: Any) -> None:
        probe.returned(self, conn)
        await original(self, conn)

    putconn.__doc__ = original.__doc__
    return putconn


def async_open(probe: PsycopgProbe, original: Any) -> Any:
    async def open(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: A001 - the pool's API
        was_closed = self.closed
        await original(self, *args, **kwargs)
        if was_closed:
            probe.pool_opened(self, sys._getframe(1))

    open.__doc__ = original.__doc__
    return open
