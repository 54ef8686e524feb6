"""Lock waits outside stress mode, sampled only while a test has another connection.

A test with one connection cannot wait on itself, so nothing runs until a Django connection opens
on a thread other than the test's during the test body (a worker thread, an executor, asgiref's
sync_to_async thread). From then until the body ends, a thread polls the server on the plugin's
own read-only connection (PostgreSQL: `pg_stat_activity` from the `postgres` database) for
sessions of the test database waiting on a lock, with the sessions that block them; the query
is the backend's (backends/, `lock_waits`). SQL is kept as its fingerprint only.
"""

from __future__ import annotations

import threading
from typing import Any

from ..backends import Backend, for_vendor
from .psycopg import backend_pid
from .recorder import Hub, TestRecorder

APPLICATION_NAME = "pytest-dbguard lock sampler"
INTERVAL_S = 0.02
LOCK_WAITS = "lock_waits"


class LockSampler:
    """Starts a sampling thread on the first other-thread connection of a test body."""

    name = LOCK_WAITS

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.test_ident: int | None = None
        # backend pid -> the thread whose connection it serves (for the report)
        self.pids: dict[int, str] = {}
        self._conn: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # (blocked pid, blocked fingerprint) -> the longest wait seen, with its blockers
        self._waits: dict[tuple[int, str], dict[str, Any]] = {}
        self._failed = False
        hub.connection_hooks.append(self._on_connection)

    # -- probe protocol ----------------------------------------------------------------------
    def start_test(self, recorder: TestRecorder) -> None:
        self.test_ident = threading.get_ident()
        self._waits = {}
        self.pids = {}

    def end_phase(self, recorder: TestRecorder, phase: str) -> None:
        if phase != "call":
            return
        self._stop_sampling()
        if not self._waits:
            return
        from django.db import connections

        for wrapper in connections.all(initialized_only=True):
            pid = backend_pid(wrapper.connection) if wrapper.connection is not None else None
            if pid:
                self.pids[pid] = threading.current_thread().name
        waits = []
        for wait in sorted(self._waits.values(), key=lambda w: -w["wait_ms"]):
            blockers = [dict(b, thread=self.pids.get(b["pid"]))
                        for b in wait["blockers"].values()]
            waits.append(dict(wait, thread=self.pids.get(wait["pid"]), blockers=blockers))
        recorder.facts[self.name] = waits

    def close(self) -> None:
        self._stop_sampling()
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    # -- sampling ------------------------------------------------------------------------------
    def _on_connection(self, connection: Any) -> None:
        recorder = self.hub.recorder
        backend = for_vendor(connection.vendor)
        if recorder is None or recorder.current_phase != "call" or not backend.samples_locks:
            return
        pid = backend_pid(connection.connection)
        if pid:
            self.pids[pid] = threading.current_thread().name
        if self._thread is not None or self._failed or threading.get_ident() == self.test_ident:
            return
        from ..stress.runner import THREAD_PREFIX

        if threading.current_thread().name.startswith(THREAD_PREFIX):
            return  # a stressed body: the stress watchdog samples its locks itself
        if self._conn is None or self._conn.closed:
            self._conn = _connect(backend, connection.settings_dict)
            if self._conn is None:
                self._failed = True
                return
        databases = sorted({connection.settings_dict["NAME"]})
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(backend, databases),
                                        name="dbguard-lock-sampler", daemon=True)
        self._thread.start()

    def _stop_sampling(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()

    def _loop(self, backend: Backend, databases: list[str]) -> None:
        while True:
            try:
                rows = backend.lock_waits(self._conn, databases)
            except Exception:
                self._failed = True
                return
            for pid, sql, wait_ms, blocker_pid, state, blocker_sql in rows:
                self._note(pid, sql, float(wait_ms or 0.0), blocker_pid, state, blocker_sql)
            if self._stop.wait(INTERVAL_S):
                return

    def _note(self, pid: int, sql: str | None, wait_ms: float, blocker_pid: int,
              state: str | None, blocker_sql: str | None) -> None:
        fingerprint = self._fingerprint(sql)
        entry = self._waits.get((pid, fingerprint))
        if entry is None:
            entry = self._waits[(pid, fingerprint)] = {
                "pid": pid, "sql": fingerprint, "wait_ms": wait_ms, "blockers": {}}
        entry["wait_ms"] = max(entry["wait_ms"], wait_ms)
        entry["blockers"][blocker_pid] = {"pid": blocker_pid, "state": state,
                                          "sql": self._fingerprint(blocker_sql)}

    def _fingerprint(self, sql: str | None) -> str:
        if not sql:
            return ""
        fingerprinter = self.hub.fingerprinter
        return self.hub.catalog.shapes[fingerprinter.index_of(sql)].fingerprint


def _connect(backend: Backend, settings: dict[str, Any]) -> Any:
    """The sampler's own connection: read-only, to the server's maintenance database, short
    timeouts (PostgreSQL: `postgres`)."""
    try:
        return backend.monitor_connection(settings, APPLICATION_NAME)
    except Exception:  # no driver, or no server: the sampler stays off
        return None
