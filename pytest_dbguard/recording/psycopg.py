"""Raw psycopg 3 connections and psycopg-pool checkouts made by code under test.

psycopg has no public hook that announces new connections, so while a session records, the public
entry points are wrapped: `psycopg.connect` / `Connection.connect` / `AsyncConnection.connect`
and the pools' constructor, `open`, `getconn` and `putconn`. `uninstall()` puts the originals back.
Connections opened by Django (tracked through its own signal), by psycopg-pool's workers (the
pool is tracked instead) and by the plugin itself (the census) are left alone.

Its helpers, by job: psycopg_pool.py wraps the pools' methods, raw_statements.py the watched
connections' cursors, raw_writes.py their commits and rollbacks (escaped-write), driver.py reads
a connection object's state, and raw_facts.py turns a test's notes into PsycopgFacts and closes
what the test leaked.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ..events import NO_SITE, CallSite
from ..text import first_line
from .callsite import find_user_site
from .driver import (  # noqa: F401 - re-exported for the probes that read them
    TOO_MANY_CONNECTIONS,
    backend_pid,
    driver_status,
    is_connection_refused,
)
from .ledger import LedgerEntry
from .psycopg_pool import (
    async_getconn,
    async_open,
    async_putconn,
    sync_getconn,
    sync_open,
    sync_putconn,
    wrap_init,
)
from .raw_facts import NO_FACTS, close_leaked, frozen_facts, raw_closed, running_facts
from .raw_statements import watch as watch_statements
from .raw_writes import RawWrites
from .recorder import Hub, TestRecorder

_PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep

def _module_dir(name: str) -> str | None:
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    return os.path.dirname(os.path.abspath(path)) + os.sep if path else None


class PsycopgProbe:
    """Follows raw psycopg connections, pools and pool checkouts of each recorded test."""

    name = "psycopg"

    def __init__(self, hub: Hub, on_open: Callable[[TestRecorder], None]) -> None:
        self.hub = hub
        self.on_open = on_open
        self.installed_connect = False
        self.installed_pool = False
        self._originals: list[tuple[Any, str, Any]] = []
        # every raw connection seen this session (for the count of open connections)
        self.raw: weakref.WeakSet[Any] = weakref.WeakSet()
        # backend pids of connections psycopg-pool opened: the census knows whose they are
        self.pool_pids: set[int] = set()
        self._test: dict[str, list[dict[str, Any]]] = {}
        # the test judged early (see before_shared_teardown) and what was found then
        self._frozen: TestRecorder | None = None
        self._frozen_facts: Any = None
        self._skip_dirs: tuple[str, ...] = (_PLUGIN_DIR,)
        # one bound method for every watched connection (raw_statements caches by it)
        self.note_statement = self._note_statement
        # the writes raw connections commit (escaped-write)
        self.writes = RawWrites(self)
        self.wrote = self.writes.wrote
        # ids of the raw connections the lock sampler heard of during this test's body
        self._in_body: set[int] = set()
        # (phase, sql, site, thread, prepared) -> count, for the test being recorded
        self._statements: dict[tuple[str, str, str | None, str, bool], int] = {}

    # -- installation ----------------------------------------------------------------------
    def ensure_installed(self) -> None:
        """Wrap psycopg once the project uses it (it may import psycopg later on).

        psycopg-pool is imported here as soon as psycopg is in use, so a test that imports
        the pool inside its body is followed from its first checkout.
        """
        if "psycopg" not in sys.modules:
            return
        if not self.installed_connect:
            self._install_connect(sys.modules["psycopg"])
        if not self.installed_pool:
            if "psycopg_pool" not in sys.modules and importlib.util.find_spec(
                    "psycopg_pool") is not None:
                importlib.import_module("psycopg_pool")
            if "psycopg_pool" in sys.modules:
                self._install_pool(sys.modules["psycopg_pool"])

    def uninstall(self) -> None:
        for owner, attr, original in reversed(self._originals):
            setattr(owner, attr, original)
        self._originals.clear()
        self.installed_connect = self.installed_pool = False

    def _replace(self, owner: Any, attr: str, value: Any) -> None:
        self._originals.append((owner, attr, owner.__dict__[attr]))
        setattr(owner, attr, value)

    def _install_connect(self, psycopg: Any) -> None:
        probe = self
        self._refresh_dirs()
        sync_connect = psycopg.Connection.__dict__["connect"].__func__
        async_connect = psycopg.AsyncConnection.__dict__["connect"].__func__

        def connect(cls: Any, *args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1)
            try:
                conn = sync_connect(cls, *args, **kwargs)
            except Exception as exc:
                probe._connect_failed(exc, caller)
                raise
            probe._connected(conn, caller, "psycopg")
            return conn

        async def aconnect(cls: Any, *args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1)
            try:
                conn = await async_connect(cls, *args, **kwargs)
            except Exception as exc:
                probe._connect_failed(exc, caller)
                raise
            probe._connected(conn, caller, "psycopg async")
            return conn

        connect.__doc__ = sync_connect.__doc__
        aconnect.__doc__ = async_connect.__doc__
        self._replace(psycopg.Connection, "connect", classmethod(connect))
        self._replace(psycopg.AsyncConnection, "connect", classmethod(aconnect))
        # `psycopg.connect` is an alias bound at import time: it needs its own replacement
        self._replace(psycopg, "connect", psycopg.Connection.connect)
        self.writes.install(psycopg, self._replace)
        self.installed_connect = True

    def _install_pool(self, psycopg_pool: Any) -> None:
        probe = self
        self._refresh_dirs()
        pool_timeout = psycopg_pool.PoolTimeout
        for cls, is_async in ((psycopg_pool.ConnectionPool, False),
                              (getattr(psycopg_pool, "AsyncConnectionPool", None), True)):
            if cls is None:
                continue
            getconn, putconn = cls.__dict__["getconn"], cls.__dict__["putconn"]
            open_ = cls.__dict__["open"]
            # the constructor opens the pool itself (open=True, or by default)
            self._replace(cls, "__init__", wrap_init(probe, cls.__dict__["__init__"]))
            if is_async:
                self._replace(cls, "getconn", async_getconn(probe, getconn, pool_timeout))
                self._replace(cls, "putconn", async_putconn(probe, putconn))
                self._replace(cls, "open", async_open(probe, open_))
            else:
                self._replace(cls, "getconn", sync_getconn(probe, getconn, pool_timeout))
                self._replace(cls, "putconn", sync_putconn(probe, putconn))
                self._replace(cls, "open", sync_open(probe, open_))
        self.installed_pool = True

    def _refresh_dirs(self) -> None:
        dirs = [_PLUGIN_DIR]
        for name in ("django", "psycopg_pool"):
            found = _module_dir(name)
            if found:
                dirs.append(found)
        self._skip_dirs = tuple(dirs)

    # -- events ------------------------------------------------------------------------------
    def _owner(self, frame: Any, through_pool: bool = False) -> str | None:
        """Who called psycopg: 'django', 'psycopg_pool', 'plugin', or None for the project.

        With `through_pool`, psycopg-pool's own frames are walked past (pool.connection()
        calls getconn), so the answer is who used the pool.
        """
        passthrough = tuple(d for d in (_module_dir("psycopg"),
                                        _module_dir("psycopg_pool") if through_pool else None)
                            if d)
        while frame is not None:
            filename = frame.f_code.co_filename
            if not filename.startswith(passthrough):
                if filename.startswith(self._skip_dirs):
                    if filename.startswith(_PLUGIN_DIR):
                        return "plugin"
                    return "psycopg_pool" if "psycopg_pool" in filename else "django"
                return None
            frame = frame.f_back
        return None

    def _call_site(self, frame: Any) -> CallSite | None:
        site_i = find_user_site(self.hub.classifier, frame)
        return self.hub.catalog.sites[site_i] if site_i != NO_SITE else None

    def _site(self, frame: Any) -> str | None:
        site = self._call_site(frame)
        return str(site) if site is not None else None

    site_of = _site

    def _recording(self) -> tuple[TestRecorder, str] | None:
        recorder = self.hub.recorder
        if recorder is None or recorder.current_phase is None:
            return None
        return recorder, recorder.current_phase

    def recording_test(self) -> tuple[TestRecorder, str] | None:
        """The test and phase being recorded, unless a shared fixture is running."""
        return None if self.hub.rows is self.hub.shared_rows else self._recording()

    def _connected(self, conn: Any, caller: Any, kind: str) -> None:
        owner = self._owner(caller)
        if owner == "psycopg_pool":
            pid = backend_pid(conn)
            if pid:
                self.pool_pids.add(pid)
            return
        if owner is not None:
            return
        self.raw.add(conn)
        watch_statements(conn, self.note_statement, self.wrote)
        self.writes.watch(conn, "a raw psycopg connection")
        active = self._recording()
        if active is None:
            return
        recorder, phase = active
        thread = threading.current_thread()
        ref = weakref.ref(conn)
        call_site = self._call_site(caller)
        site = str(call_site) if call_site is not None else None
        pid = backend_pid(conn)
        entry = {
            "kind": kind, "thread": thread.name, "phase": phase, "pid": pid, "site": site,
            "ref": ref, "shared": self.hub.rows is self.hub.shared_rows,
        }
        self._test.setdefault("connections", []).append(entry)
        recorder.vendors.add("postgresql")
        recorder.connections.append(LedgerEntry(
            kind=kind, alias="(psycopg)", vendor="postgresql", thread=thread.name, phase=phase,
            pid=pid, site=call_site, shared=bool(entry["shared"]),
            is_closed=lambda: raw_closed(ref),
        ))
        self.on_open(recorder)
        self._announce(conn, phase)

    def _announce(self, conn: Any, phase: str) -> None:
        """Tell the lock sampler of a raw connection the test uses (Hub.raw_connection_hooks)."""
        hooks = self.hub.raw_connection_hooks
        if not hooks or self.hub.rows is self.hub.shared_rows:
            return
        if phase == "call":
            self._in_body.add(id(conn))
        label = self.writes.label_of(conn)
        for hook in hooks:
            hook(conn, label)

    def _connect_failed(self, exc: BaseException, caller: Any) -> None:
        if not is_connection_refused(exc) or self._owner(caller) == "plugin":
            return
        active = self._recording()
        if active is None:
            return
        recorder, phase = active
        self._test.setdefault("refused", []).append({
            "phase": phase, "site": self._site(caller), "thread": threading.current_thread().name,
            "sqlstate": getattr(exc, "sqlstate", None) or TOO_MANY_CONNECTIONS,
            "message": first_line(exc),
        })

    def _note_statement(self, conn: Any, sql: str, prepared: bool, caller: Any) -> None:
        active = self._recording()
        if active is None or self.hub.rows is self.hub.shared_rows:
            return
        if active[1] == "call" and id(conn) not in self._in_body:
            # opened before the body (a fixture, an earlier test): the body uses it now
            self._announce(conn, "call")
        key = (active[1], sql[:2000], self._site(caller), threading.current_thread().name,
               prepared)
        self._statements[key] = self._statements.get(key, 0) + 1

    def pool_opened(self, pool: Any, caller: Any) -> None:
        if self._owner(caller, through_pool=True) is not None:
            return
        active = self._recording()
        if active is None or self.hub.rows is self.hub.shared_rows:
            return
        _, phase = active
        self._test.setdefault("pools", []).append({
            "name": getattr(pool, "name", "?"), "phase": phase, "site": self._site(caller),
            "ref": weakref.ref(pool), "max_size": getattr(pool, "max_size", None),
        })

    def checked_out(self, pool: Any, conn: Any, caller: Any) -> None:
        if self._owner(caller, through_pool=True) is not None:
            return
        active = self._recording()
        if active is None:
            return
        _, phase = active
        watch_statements(conn, self.note_statement, self.wrote)
        self.writes.watch(conn, f"a connection of psycopg-pool '{getattr(pool, 'name', '?')}'")
        self._announce(conn, phase)
        self._test.setdefault("checkouts", []).append({
            "pool": getattr(pool, "name", "?"), "pool_ref": weakref.ref(pool),
            "conn_id": id(conn), "conn_ref": weakref.ref(conn), "phase": phase,
            "site": self._site(caller), "thread": threading.current_thread().name,
            "pid": backend_pid(conn), "returned": False,
            "shared": self.hub.rows is self.hub.shared_rows,
        })

    def returned(self, pool: Any, conn: Any) -> None:
        for checkout in self._test.get("checkouts", ()):
            if (not checkout["returned"] and checkout["conn_id"] == id(conn)
                    and checkout["pool_ref"]() is pool):
                checkout["returned"] = True
                return

    def timed_out(self, pool: Any, caller: Any, timeout: Any) -> None:
        active = self._recording()
        if active is None:
            return
        _, phase = active
        out = [c["site"] or "?" for c in self._test.get("checkouts", ())
               if not c["returned"] and c["pool_ref"]() is pool]
        self._test.setdefault("timeouts", []).append({
            "pool": getattr(pool, "name", "?"), "max_size": getattr(pool, "max_size", None),
            "timeout": timeout if timeout is not None else getattr(pool, "timeout", None),
            "site": self._site(caller), "phase": phase,
            "thread": threading.current_thread().name, "checked_out_here": out,
        })

    # -- probe protocol ----------------------------------------------------------------------
    def start_test(self, recorder: TestRecorder) -> None:
        self.ensure_installed()
        # what the last test left is emptied (most tests leave nothing: nothing to allocate)
        if self._test:
            self._test = {}
        if self._statements:
            self._statements = {}
        if self.writes.committed:
            self.writes.committed = {}
        if self._in_body:
            self._in_body = set()

    def _quiet(self) -> bool:
        """Nothing to report so far: no raw connection, pool, checkout, refusal, statement or
        write of the code under test since the test began (each of them notes itself)."""
        return not (self._test or self._statements or self.writes.committed)

    def end_phase(self, recorder: TestRecorder, phase: str) -> None:
        if phase == "setup":
            # no rule is judged before the call phase ends, and the notes accumulate over the
            # test: the facts of the call phase hold the set-up's events as well
            return
        if phase == "call":
            # pool-exhausted, lock-wait, escaped-write and pgbouncer-unsafe are judged with
            # the call phase: its events are facts from then on
            recorder.facts[self.name] = NO_FACTS if self._quiet() else running_facts(
                self._test, self._statements, self.writes.take())
            return
        if self._frozen is recorder:
            recorder.facts[self.name] = self._frozen_facts
            self._frozen = None
            return
        self._freeze(recorder)

    def before_shared_teardown(self, recorder: TestRecorder) -> None:
        """Judge and close the test's leaks before a shared fixture (the test database) goes."""
        if self._frozen is recorder or recorder.current_phase != "teardown":
            return
        self._freeze(recorder)
        self._frozen, self._frozen_facts = recorder, recorder.facts[self.name]

    def _freeze(self, recorder: TestRecorder) -> None:
        self.ensure_installed()
        if self._quiet():
            recorder.facts[self.name] = NO_FACTS
            return
        test, self._test = self._test, {}
        recorder.facts[self.name] = frozen_facts(test, self._statements, self.writes.take())
        self._statements = {}
        close_leaked(test)
