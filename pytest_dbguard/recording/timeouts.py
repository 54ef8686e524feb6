"""query_timeout: timeouts set as a server setting or by a progress handler, as the backend can."""

from __future__ import annotations

import threading
from time import perf_counter
from typing import Any

from ..backends import TIMEOUT_PROGRESS, TIMEOUT_SETTING, for_vendor
from ..facts import QUERY_TIMEOUT, QueryTimeoutFacts
from .recorder import Hub, TestRecorder

# How many SQLite VM instructions run between two checks of the deadline: small enough to stop
# within a millisecond or two, large enough to cost nothing measurable.
SQLITE_PROGRESS_STEPS = 1000


class QueryTimeouts:
    """Applies one test's query timeout to its connections for the call phase, then undoes it.

    Everything runs on the driver connection under the Django wrapper, so neither the test's
    counters (assertNumQueries, CaptureQueriesContext) nor dbguard's own rows see it.
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.ms: int | None = None
        self.using: tuple[str, ...] | None = None
        # (driver connection, its backend, the timeout settings it had before)
        self._pg: list[tuple[Any, Any, tuple[str, ...]]] = []
        self._pending: list[tuple[Any, Any, tuple[str, ...]]] = []
        self._sqlite: list[tuple[Any, Any]] = []  # (Django connection, wrapper)
        self._hooked = False

    def start(self, recorder: TestRecorder, ms: int, using: tuple[str, ...] | None) -> None:
        from django.db import connections

        self.retry_pending()
        self.ms, self.using = ms, using
        recorder.facts[QUERY_TIMEOUT] = QueryTimeoutFacts(ms, tuple(using) if using else None)
        if not self._hooked:
            self.hub.connection_hooks.append(self._on_connection_created)
            self._hooked = True
        for conn in connections.all(initialized_only=True):
            self._apply(conn)

    def _on_connection_created(self, conn: Any) -> None:
        if self.ms is not None:
            self._apply(conn)

    def _wanted(self, conn: Any) -> bool:
        return self.using is None or conn.alias in self.using

    def _apply(self, conn: Any) -> None:
        if not self._wanted(conn):
            return
        backend = for_vendor(conn.vendor)
        if backend.timeout == TIMEOUT_SETTING:
            self._apply_setting(conn, backend)
        elif backend.timeout == TIMEOUT_PROGRESS:
            self._apply_sqlite(conn)

    def _apply_setting(self, conn: Any, backend: Any) -> None:
        raw = conn.connection
        if raw is None or backend.in_failed_transaction(raw):
            return  # not open yet (the connection_created hook will come) or unusable
        if any(entry[0] is raw for entry in self._pg):
            return
        assert self.ms is not None
        with self.hub.paused(), raw.cursor() as cursor:
            previous = backend.read_timeouts(cursor)
            backend.write_timeouts(cursor, backend.timeout_values(self.ms))
        self._pg.append((raw, backend, previous))

    def _apply_sqlite(self, conn: Any) -> None:
        raw = conn.connection
        if raw is None or any(c is conn for c, _ in self._sqlite):
            return
        budget = self.ms / 1000.0 if self.ms else 0.0
        state = threading.local()

        def on_progress() -> int:
            deadline = getattr(state, "deadline", None)
            return 1 if deadline is not None and perf_counter() > deadline else 0

        def deadline_wrapper(execute: Any, sql: str, params: Any, many: bool,
                             context: dict[str, Any]) -> Any:
            state.deadline = perf_counter() + budget
            try:
                return execute(sql, params, many, context)
            finally:
                state.deadline = None

        raw.set_progress_handler(on_progress, SQLITE_PROGRESS_STEPS)
        # first position: Django's execute_wrapper() context manager pops the last entry
        conn.execute_wrappers.insert(0, deadline_wrapper)
        self._sqlite.append((conn, deadline_wrapper))

    def stop(self) -> None:
        """Put every connection back as it was; a failed transaction is retried later."""
        self.ms = None
        for conn, wrapper in self._sqlite:
            if wrapper in conn.execute_wrappers:
                conn.execute_wrappers.remove(wrapper)
            raw = conn.connection
            if raw is not None:
                raw.set_progress_handler(None, 0)
        self._sqlite.clear()
        entries, self._pg = self._pg, []
        self._restore(entries)

    def retry_pending(self) -> None:
        entries, self._pending = self._pending, []
        self._restore(entries)

    def _restore(self, entries: list[tuple[Any, Any, tuple[str, ...]]]) -> None:
        for raw, backend, previous in entries:
            if getattr(raw, "closed", False):
                continue  # a closed session takes its settings with it
            if backend.in_failed_transaction(raw):
                # the rollback that ends this transaction undoes a SET made inside it; one
                # made before it is put back once the connection is usable again
                self._pending.append((raw, backend, previous))
                continue
            with self.hub.paused(), raw.cursor() as cursor:
                backend.write_timeouts(cursor, previous)
