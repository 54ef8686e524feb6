"""query_timeout: timeouts set out of band (PostgreSQL) or by progress handler (SQLite)."""

from __future__ import annotations

import threading
from time import perf_counter
from typing import Any

from .recorder import Hub, TestRecorder

# How many SQLite VM instructions run between two checks of the deadline: small enough to stop
# within a millisecond or two, large enough to cost nothing measurable.
SQLITE_PROGRESS_STEPS = 1000
# The error texts each backend gives a cancelled statement, for the query-timeout rule.
PG_TIMEOUT_STATES = ("57014", "55P03")


def _pg_in_failed_transaction(raw: Any) -> bool:
    info = getattr(raw, "info", None)
    status = getattr(info, "transaction_status", None)
    if status is not None:  # psycopg 3: TransactionStatus.INERROR
        return int(status) == 3
    get_status = getattr(raw, "get_transaction_status", None)
    return bool(get_status and get_status() == 4)  # psycopg2 TRANSACTION_STATUS_INERROR


class QueryTimeouts:
    """Applies one test's query timeout to its connections for the call phase, then undoes it.

    Everything runs on the driver connection under the Django wrapper, so neither the test's
    counters (assertNumQueries, CaptureQueriesContext) nor dbguard's own rows see it.
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.ms: int | None = None
        self.using: tuple[str, ...] | None = None
        # (driver connection, previous statement_timeout, previous lock_timeout)
        self._pg: list[tuple[Any, str, str]] = []
        self._pending: list[tuple[Any, str, str]] = []
        self._sqlite: list[tuple[Any, Any]] = []  # (Django connection, wrapper)
        self._hooked = False

    def start(self, recorder: TestRecorder, ms: int, using: tuple[str, ...] | None) -> None:
        from django.db import connections

        self.retry_pending()
        self.ms, self.using = ms, using
        recorder.facts["query_timeout"] = {"ms": ms, "using": list(using) if using else None}
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
        if conn.vendor == "postgresql":
            self._apply_pg(conn)
        elif conn.vendor == "sqlite":
            self._apply_sqlite(conn)

    def _apply_pg(self, conn: Any) -> None:
        raw = conn.connection
        if raw is None or _pg_in_failed_transaction(raw):
            return  # not open yet (the connection_created hook will come) or unusable
        if any(entry[0] is raw for entry in self._pg):
            return
        value = f"{self.ms}ms"
        with self.hub.paused(), raw.cursor() as cursor:
            cursor.execute("SELECT current_setting('statement_timeout'), "
                           "current_setting('lock_timeout')")
            previous = cursor.fetchone()
            cursor.execute("SELECT set_config('statement_timeout', %s, false), "
                           "set_config('lock_timeout', %s, false)", (value, value))
        self._pg.append((raw, previous[0], previous[1]))

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

    def _restore(self, entries: list[tuple[Any, str, str]]) -> None:
        for raw, statement, lock in entries:
            if getattr(raw, "closed", False):
                continue  # a closed session takes its settings with it
            if _pg_in_failed_transaction(raw):
                # the rollback that ends this transaction undoes a SET made inside it; one
                # made before it is put back once the connection is usable again
                self._pending.append((raw, statement, lock))
                continue
            with self.hub.paused(), raw.cursor() as cursor:
                cursor.execute("SELECT set_config('statement_timeout', %s, false), "
                               "set_config('lock_timeout', %s, false)", (statement, lock))
