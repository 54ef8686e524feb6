"""Lock waits outside stress mode, sampled only while a test has another connection.

A test with one connection cannot wait on itself, so nothing runs until, during the test body,
a Django connection opens on a thread other than the test's (a worker thread, an executor), the
test hands work to asgiref's sync_to_async thread (whose connection may be older than the
test), or a raw psycopg connection or psycopg-pool checkout of the code under test opens or runs
a statement; a raw connection opened by the test's set-up and still open starts it with the
body. From then until the body ends, a thread polls the server on the plugin's own read-only
connection (PostgreSQL: `pg_stat_activity` from the `postgres` database) for sessions of the test
database waiting on a lock, with the sessions that block them; the query is the backend's
(backends/, `lock_waits`). The test's own backends (Django connections of any
thread, raw connections) are named in the report. SQL is kept as its fingerprint only.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from ..backends import Backend, for_vendor
from ..facts import LOCK_WAITS, LockHolder, LockWait
from .psycopg import backend_pid
from .recorder import Hub, TestRecorder

APPLICATION_NAME = "pytest-dbguard lock sampler"
INTERVAL_S = 0.02


def _postgresql() -> Backend:
    """Raw psycopg connections and asgiref hand-offs are sampled through the Django aliases
    that point at PostgreSQL (_django_settings), the one server whose lock waits can be read
    so far. Loaded on first use: a SQLite run never imports the PostgreSQL backend."""
    return for_vendor("postgresql")


class LockSampler:
    """Starts a sampling thread on the first other connection of a test body."""

    name = LOCK_WAITS

    def __init__(self, hub: Hub, wrappers: Any = ()) -> None:
        self.hub = hub
        self.test_ident: int | None = None
        # backend pid -> the thread whose connection it serves (for the report)
        self.pids: dict[int, str] = {}
        # backend pid -> how the report names a raw psycopg connection or pool checkout
        self.raw: dict[int, str] = {}
        # every Django connection object the taps saw, any thread (names older connections)
        self.wrappers = wrappers
        # the set-up opened a raw connection: sample from the start of the body
        self._raw_in_setup: list[tuple[Any, dict[str, Any], list[str]]] = []
        self._conn: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # (blocked pid, blocked fingerprint) -> the longest wait seen, with its blockers
        self._waits: dict[tuple[int, str], dict[str, Any]] = {}
        self._failed = False
        self._start_lock = threading.Lock()
        hub.connection_hooks.append(self._on_connection)
        hub.raw_connection_hooks.append(self._on_raw_connection)
        hub.handoff_hooks.append(self._on_handoff)

    # -- probe protocol ----------------------------------------------------------------------
    def start_test(self, recorder: TestRecorder) -> None:
        self.test_ident = threading.get_ident()
        self._waits = {}
        self.pids = {}
        self.raw = {}
        self._raw_in_setup = []

    def end_phase(self, recorder: TestRecorder, phase: str) -> None:
        if phase == "setup":
            self._start_for_setup(recorder)
        if phase != "call":
            return
        self._stop_sampling()
        if not self._waits:
            return
        from django.db import connections

        self._name_older_connections()
        for wrapper in connections.all(initialized_only=True):
            pid = backend_pid(wrapper.connection) if wrapper.connection is not None else None
            if pid:
                self.pids[pid] = threading.current_thread().name
        waits = []
        for wait in sorted(self._waits.values(), key=lambda w: -w["wait_ms"]):
            blockers = tuple(
                LockHolder(b["pid"], b["state"], b["sql"], thread=self.pids.get(b["pid"]),
                           connection=self.raw.get(b["pid"]))
                for b in wait["blockers"].values())
            waits.append(LockWait(wait["pid"], wait["sql"], wait["wait_ms"], blockers,
                                  thread=self.pids.get(wait["pid"]),
                                  connection=self.raw.get(wait["pid"])))
        recorder.facts[self.name] = waits

    def _start_for_setup(self, recorder: TestRecorder) -> None:
        """The set-up left another connection open (a raw one, or another thread's): the body
        may wait on it, so sampling starts with the body."""
        opened, self._raw_in_setup = self._raw_in_setup, []
        for ref, settings, databases in opened:
            conn = ref()
            if conn is not None and not conn.closed:
                self._start(_postgresql(), settings, databases)
        others = [entry for entry in recorder.connections
                  if entry.kind == "django" and entry.phase == "setup"
                  and entry.vendor == "postgresql" and not entry.shared
                  and entry.thread_ident != self.test_ident and not entry.is_closed()]
        for entry in others:
            if entry.pid:
                self.pids[entry.pid] = entry.thread
        found = _django_settings(None) if others else None
        if found is not None:
            self._start(_postgresql(), found, [found["NAME"]])

    def _name_older_connections(self) -> None:
        """Django connections of other threads opened before the test (asgiref's thread)."""
        from .commits import conn_index

        conns = self.hub.catalog.conns
        try:
            wrappers = list(self.wrappers)
        except RuntimeError:  # another thread opened a connection meanwhile: name none
            return
        for wrapper in wrappers:
            raw = getattr(wrapper, "connection", None)
            pid = backend_pid(raw) if raw is not None else None
            index = conn_index(self.hub, wrapper)
            if pid and pid not in self.pids and index is not None:
                self.pids[pid] = conns[index].thread

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
        if threading.get_ident() == self.test_ident:
            return
        self._start(backend, connection.settings_dict, [connection.settings_dict["NAME"]])

    def _on_raw_connection(self, conn: Any, label: str) -> None:
        """A raw psycopg connection or pool checkout of the code under test, in any thread."""
        recorder = self.hub.recorder
        if recorder is None or recorder.current_phase not in ("setup", "call"):
            return
        pid = backend_pid(conn)
        if pid:
            self.pids[pid] = threading.current_thread().name
            self.raw[pid] = label
        settings = _django_settings(getattr(conn.info, "dbname", None))
        if settings is None:
            return
        databases = [str(conn.info.dbname)]
        if recorder.current_phase == "setup":
            self._raw_in_setup.append((weakref.ref(conn), settings, databases))
        else:
            self._start(_postgresql(), settings, databases)

    def _on_handoff(self) -> None:
        """The test hands work to asgiref's thread, whose connection may predate the test."""
        recorder = self.hub.recorder
        if recorder is None or recorder.current_phase != "call" or self._thread is not None:
            return
        settings = _django_settings(None)
        if settings is not None:
            self._start(_postgresql(), settings, [settings["NAME"]])

    def _start(self, backend: Backend, settings: dict[str, Any], databases: list[str]) -> None:
        if self._thread is not None or self._failed:
            return
        from ..stress.runner import THREAD_PREFIX

        if threading.current_thread().name.startswith(THREAD_PREFIX):
            return  # a stressed body: the stress watchdog samples its locks itself
        with self._start_lock:  # several threads may open their connections at once
            if self._thread is not None:
                return
            if self._conn is None or self._conn.closed:
                self._conn = _connect(backend, settings)
                if self._conn is None:
                    self._failed = True
                    return
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop,
                                            args=(backend, sorted(set(databases))),
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
        blockers = entry["blockers"]
        if blocker_pid in blockers and self._releasing(blocker_sql):
            # The last sample of a wait can catch the holder committing, the very statement
            # that ends the wait ("active, last statement: COMMIT"): what it was doing while
            # it held the lock, seen by an earlier sample, says more.
            return
        blockers[blocker_pid] = {"pid": blocker_pid, "state": state,
                                 "sql": self._fingerprint(blocker_sql)}

    def _fingerprint(self, sql: str | None) -> str:
        if not sql:
            return ""
        fingerprinter = self.hub.fingerprinter
        return self.hub.catalog.shapes[fingerprinter.index_of(sql)].fingerprint

    def _releasing(self, sql: str | None) -> bool:
        """Whether a statement is transaction control (COMMIT, ROLLBACK, RELEASE...)."""
        if not sql:
            return False
        return self.hub.catalog.shapes[self.hub.fingerprinter.index_of(sql)].is_transaction_control


def _django_settings(database: str | None) -> dict[str, Any] | None:
    """The settings of the PostgreSQL alias for `database` (any PostgreSQL alias for None)."""
    from django.db import connections

    table = connections.settings
    if _WITHOUT_POSTGRESQL[0] is table:
        return None  # asked at each sync_to_async hand-off: a SQLite run answers at once
    # the configured dicts, which the test database's name replaced: no connection object is
    # made in the calling thread
    postgresql = False
    for settings in table.values():
        engine = settings.get("ENGINE", "")
        if "postgresql" in engine or "postgis" in engine:
            postgresql = True
            if database in (None, settings.get("NAME")):
                return dict(settings)
    if not postgresql:  # an alias's engine never changes: the table is known for good
        _WITHOUT_POSTGRESQL[0] = table
    return None


# Django's table of database settings once it was found to have no PostgreSQL alias
_WITHOUT_POSTGRESQL: list[Any] = [None]


def _connect(backend: Backend, settings: dict[str, Any]) -> Any:
    """The sampler's own connection: read-only, to the server's maintenance database, short
    timeouts (PostgreSQL: `postgres`)."""
    try:
        return backend.monitor_connection(settings, APPLICATION_NAME)
    except Exception:  # no driver, or no server: the sampler stays off
        return None
