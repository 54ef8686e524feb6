"""PostgreSQL census: backends of the test database a test left connected, seen by the server.

Runs on the plugin's own connection (to the `postgres` maintenance database, read-only, never one
of the test's connections, so nothing lands in the test's queries), once per test after teardown:
it lists backends of the test database(s) that started during the test and are still there. This
catches connections opened by drivers dbguard does not hook. It only reads `pg_stat_activity`.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from typing import Any

from ..backends import Backend, for_vendor
from ..facts import CensusFacts, ServerBackend
from .django_db import DjangoTaps
from .psycopg import PsycopgProbe, backend_pid
from .recorder import Hub, TestRecorder

APPLICATION_NAME = "pytest-dbguard census"
# A backend whose client just disconnected takes a moment to leave pg_stat_activity.
SETTLE_S = 0.5
_POLL_S = 0.01


class CensusProbe:
    """Counts the test database's backends on PostgreSQL after each test; a no-op elsewhere."""

    name = "census"

    def __init__(self, hub: Hub, taps: DjangoTaps, raw: PsycopgProbe,
                 note: Callable[[str], None]) -> None:
        self.hub = hub
        self.taps = taps
        self.raw = raw
        self.note = note
        self._conn: Any = None
        self._offset = 0.0
        self._failed = False
        self._since = 0.0
        self._databases: set[str] = set()
        # socket inodes of this process after the last census (None: not known yet)
        self._sockets: frozenset[int] | None = None
        # the aliases that take a census, worked out once per session (see _settings)
        self._settings: list[tuple[Backend, dict[str, Any]]] | None = None
        self._settings_of: Any = None
        self._connections: Any = None  # django.db.connections, imported on first use

    def start_test(self, recorder: TestRecorder) -> None:
        self._since = time.time()
        if self._databases:
            self._databases = set()

    def end_phase(self, recorder: TestRecorder, phase: str) -> None:
        settings = self._census_settings()
        if not settings:  # SQLite, or any backend without a census: nothing to do
            return
        # every phase: pytest-django renames NAME to the test database during a set-up
        self._databases.update(s["NAME"] for _, s in settings if s.get("NAME"))
        if phase != "teardown" or self._failed:
            return
        if self._quiet():
            return
        backend = settings[0][0]
        conn = self._connection(backend, settings[0][1])
        if conn is None:
            return
        known = self._known_pids(recorder)
        databases = sorted(self._databases)
        since = self._since + self._offset
        try:
            rows = backend.census(conn, databases, since)
            deadline = time.monotonic() + SETTLE_S
            while any(row[0] not in known for row in rows) and time.monotonic() < deadline:
                time.sleep(_POLL_S)
                rows = backend.census(conn, databases, since)
        except Exception as exc:
            self._give_up(f"the PostgreSQL census query failed ({type(exc).__name__}: {exc})")
            return
        # after the query: the census connection itself and what this test left are known now
        self._sockets = open_sockets()
        recorder.facts[self.name] = CensusFacts(tuple(
            ServerBackend(pid=pid, database=datname, state=state or "unknown",
                          application_name=app or "", known=pid in known)
            for pid, datname, state, app, _ in rows
        ))

    def _quiet(self) -> bool:
        """True when no backend could have been opened that the hooks did not see.

        The census is one round trip per test (0.4 ms with its bookkeeping, most of dbguard's
        cost on a fast suite), and what it finds beyond the hooked drivers takes a new socket:
        a driver dbguard does not hook (psycopg2, asyncpg, libpq through `psycopg.pq`) opens
        one in this process, and a connection opened in another thread or a pool does too.
        So it runs only when this process holds a socket it did not hold after the last
        census, or has a live child process (a subprocess or a multiprocessing worker may
        hold a backend). What it no longer sees: a backend opened during the test by a process
        that is not our child when the test ends (a daemon that detached, an outside service).
        Without /proc (not Linux) it runs after every test, as before.
        """
        sockets = open_sockets()
        if sockets is None or self._sockets is None or not sockets <= self._sockets:
            return False
        return not has_children()

    def _census_settings(self) -> list[tuple[Backend, dict[str, Any]]]:
        """The aliases whose backend takes a census, with their (live) settings dicts.

        Which backend an alias has never changes in a session, and each settings dict is the
        one object every connection of the alias shares, so NAME is read fresh from it: the
        walk over the aliases (each through asgiref's thread-local storage) runs again only
        when Django's table of database settings is replaced.
        """
        connections = self._connections
        if connections is None:
            from django.db import connections

            self._connections = connections
        current = connections.settings
        if self._settings is None or self._settings_of is not current:
            self._settings = _census_settings()
            self._settings_of = current
        return self._settings

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _known_pids(self, recorder: TestRecorder) -> set[int]:
        """Backends dbguard can name: Django's connections, raw psycopg, psycopg-pool's."""
        known = {c.pid for c in recorder.connections if c.pid}
        for wrapper in list(self.taps.wrappers):
            raw = wrapper.connection
            pid = backend_pid(raw) if raw is not None else None
            if pid:
                known.add(pid)
        for conn in list(self.raw.raw):
            pid = backend_pid(conn) if not conn.closed else None
            if pid:
                known.add(pid)
        known.update(self.raw.pool_pids)
        return known

    def _connection(self, backend: Backend, settings: dict[str, Any]) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = backend.monitor_connection(settings, APPLICATION_NAME)
            offset = _clock_offset(backend, conn)
        except ImportError:
            self._give_up("the PostgreSQL census needs psycopg 3 (pip install "
                          "'pytest-dbguard[postgres]'); connection leaks are found through "
                          "the hooked drivers only")
            return None
        except Exception as exc:
            # psycopg's messages name host, port and user, never the password
            self._give_up(f"could not open the PostgreSQL census connection "
                          f"({type(exc).__name__}: {str(exc).strip().splitlines()[0]})")
            return None
        self._offset = offset
        self._conn = conn
        return conn

    def _give_up(self, why: str) -> None:
        self._failed = True
        self.close()
        self.note(f"dbguard: {why}; the census of leftover backends is off for this run.")



def _clock_offset(backend: Backend, conn: Any, samples: int = 3,
                  now: Callable[[], float] = time.time) -> float:
    """Server clock minus ours, from the quickest of a few round trips: the reading is off by up
    to half its round trip, and one round trip on a loaded machine can take tens of
    milliseconds, enough to move the census window past a backend opened as the test began."""
    best: tuple[float, float] | None = None  # (round trip, offset)
    for _ in range(samples):
        before = now()
        clock = backend.server_clock(conn)
        after = now()
        if clock is None:
            return 0.0
        if best is None or after - before < best[0]:
            best = (after - before, clock - (before + after) / 2)
    return best[1] if best is not None else 0.0

def _census_settings() -> list[tuple[Backend, dict[str, Any]]]:
    """Aliases whose backend takes a census, with their settings (pytest-django renames NAME
    to the test database)."""
    from django.db import connections

    out = []
    for alias in connections:
        try:
            connection = connections[alias]
        except Exception:  # an alias whose engine cannot even load is none of the census's
            continue
        backend = for_vendor(connection.vendor)
        if backend.takes_census:
            out.append((backend, connection.settings_dict))
    return out


def open_sockets() -> frozenset[int] | None:
    """Inodes of the sockets this process holds open; None where /proc cannot tell."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    inodes = []
    fstat, is_socket = os.fstat, stat.S_ISSOCK
    for fd in fds:
        try:
            st = fstat(int(fd))
        except (OSError, ValueError):
            continue  # the directory's own descriptor, closed by now
        if is_socket(st.st_mode):
            inodes.append(st.st_ino)
    return frozenset(inodes)


def has_children() -> bool:
    """Whether a process this one started is still there to be waited for: alive, or exited
    and not yet reaped (True where the system cannot tell).

    One waitid call, on any thread's children: WNOWAIT leaves an exited child's status for
    whoever waits for it (subprocess, multiprocessing), and ECHILD says there is no child at all.
    Reading each thread's /proc children list instead cost three system calls per thread.
    """
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except (AttributeError, OSError):  # no waitid (Windows), or it failed: assume a child
        return True
    return True
