"""A Django connection object's transaction state, read without SQL, as shared frozen facts.

The lifecycle probe reads every test-thread connection at the end of set-up and of the call:
a suite's tests mostly find the same few states, so each distinct state is one ConnectionState
for the session, and the driver's view is read the cheapest way its connection type allows.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ..facts import ConnectionState
from .driver import backend_pid, driver_status

# (alias, vendor, open, depth, needs_rollback, autocommit, driver status, backend pid)
StateFields = tuple[str, str, bool, int, bool, bool, "str | None", "int | None"]


def connection_state(wrapper: Any) -> ConnectionState:
    """What one Django connection object says about its transaction, read without SQL."""
    return ConnectionState(*state_fields(wrapper))


def state_fields(wrapper: Any) -> StateFields:
    """ConnectionState's fields, in order, read from the connection object."""
    raw = wrapper.connection
    blocks = getattr(wrapper, "atomic_blocks", None)
    depth = len(blocks) if blocks is not None else (
        len(wrapper.savepoint_ids) + 1 if wrapper.in_atomic_block else 0)
    if raw is None:
        return (wrapper.alias, wrapper.vendor, False, depth, bool(wrapper.needs_rollback),
                bool(wrapper.autocommit), None, None)
    read = _READERS.get(type(raw))
    if read is None:
        read = _READERS[type(raw)] = _reader_for(type(raw))
    driver, pid = read(raw)
    return (wrapper.alias, wrapper.vendor, True, depth, bool(wrapper.needs_rollback),
            bool(wrapper.autocommit), driver, pid)


class States:
    """ConnectionStates by their fields: frozen, so one object serves every test whose
    connection is in the same state."""

    LIMIT = 512

    def __init__(self) -> None:
        self._known: dict[StateFields, ConnectionState] = {}

    def of(self, wrapper: Any) -> ConnectionState:
        fields = state_fields(wrapper)
        state = self._known.get(fields)
        if state is None:
            if len(self._known) >= self.LIMIT:
                self._known.clear()
            state = self._known[fields] = ConnectionState(*fields)
        return state


# -- the driver's view: (transaction status, backend pid) ------------------------------------

Reader = Callable[[Any], "tuple[str | None, int | None]"]
_READERS: dict[type, Reader] = {}


def _reader_for(kind: type) -> Reader:
    """sqlite3's own connection class answers from one attribute (driver_status and backend_pid
    would first look for psycopg's `info` and psycopg2's methods, each a failed lookup);
    every other driver goes through them."""
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and kind is sqlite3.Connection:
        return _sqlite3
    return _any_driver


def _sqlite3(raw: Any) -> tuple[str | None, int | None]:
    return ("in transaction" if raw.in_transaction else "idle"), None


def _any_driver(raw: Any) -> tuple[str | None, int | None]:
    return driver_status(raw), backend_pid(raw)
