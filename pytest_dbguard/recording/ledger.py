"""The ledger of connections one test opened: one typed entry per connection, any driver.

Entries hold live objects (the connection's wrapper, a weak reference to its thread, a check
that asks whether it is closed), so they stay in the recorder; what rules read about them is
copied into frozen facts (`facts.ThreadConnection`, `events.ConnectionEvent`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
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

    # Read access by key, for code written against the ledger's former dict entries.
    def __getitem__(self, key: str) -> Any:
        if key not in _FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default) if key in _FIELDS else default


_FIELDS = frozenset(f.name for f in fields(LedgerEntry))


class ConnectionLedger(list[LedgerEntry]):
    """A test's ledger: a list of entries that also takes an entry given as a mapping of its
    fields (the form probes used before the entries were typed)."""

    def append(self, entry: LedgerEntry | Mapping[str, Any]) -> None:
        if not isinstance(entry, LedgerEntry):
            entry = LedgerEntry(**{k: v for k, v in entry.items() if k in _FIELDS})
        super().append(entry)
