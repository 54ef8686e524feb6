"""The ledger of connections one test opened: one typed entry per connection, any driver.

Entries hold live objects (the connection's wrapper, a weak reference to its thread, a check
that asks whether it is closed), so they stay in the recorder; what rules read about them is
copied into frozen facts (`facts.ThreadConnection`, `events.ConnectionEvent`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..events import CallSite


@dataclass(slots=True, eq=False)
class LedgerEntry:
    """A connection opened while a test ran: a Django connection, a raw psycopg one, a pool's.

    Mutable on purpose: once the lifecycle probe judged a test, it freezes `is_closed` and lets
    go of `wrapper`.
    """

    kind: str  # "django", "psycopg", "pool"
    alias: str  # the Django alias, "(psycopg)" for a raw connection
    vendor: str
    thread: str
    phase: str
    pid: int | None
    site: CallSite | None
    # opened by a session/module/class fixture: shared, never one test's leak
    shared: bool
    is_closed: Callable[[], bool]
    thread_ident: int | None = None
    thread_ref: weakref.ref[threading.Thread] | None = None
    via: str | None = None  # "sync_to_async" when asgiref's executor thread connected
    # Django ignores close() on an in-memory SQLite database (closing would destroy it), so
    # whether such a connection was left open says nothing
    closable: bool = True
    # A connection of a thread that exits without closing it lives on in a reference cycle
    # until the garbage collector runs: holding it until the test is judged makes "still open
    # after teardown" deterministic. The lifecycle probe lets go.
    wrapper: Any = None


class ConnectionLedger(list[LedgerEntry]):
    """A test's ledger: the connections it opened, in the order they opened."""
