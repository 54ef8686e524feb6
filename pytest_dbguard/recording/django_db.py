"""Taps every Django connection (all aliases and threads) via public hooks; lazy Django import."""

from __future__ import annotations

import inspect
import os
import sys
import threading
import weakref
from asyncio import _get_running_loop
from collections.abc import Callable
from time import perf_counter
from typing import Any

from ..events import (
    FLAG_ERROR,
    FLAG_FOREIGN_THREAD,
    FLAG_IN_ATOMIC,
    FLAG_IN_EVENT_LOOP,
    FLAG_MANY,
    NO_SITE,
    PARAM_KEY_MASK,
    PARAM_KEY_SHIFT,
    ConnInfo,
    QueryRow,
)
from .awaits import AWAITED_SITE
from .callsite import find_user_site
from .framekinds import DB_FIXTURE, IN_HARNESS, MARK, THIRD_PARTY, USER, WALK_STOP
from .ledger import LedgerEntry
from .recorder import SHARED_ROW, Hub, TestRecorder

_getframe = sys._getframe
_get_ident = threading.get_ident
awaited_site = AWAITED_SITE.get
_DISPATCH_UID = "pytest_dbguard.tap"
# code flags of frames that can be suspended and resumed by another caller
_SUSPENDABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _redact_params(params: Any, limit: int = 200) -> str:
    text = repr(params)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sqlstate(exc: BaseException) -> str | None:
    for candidate in (exc, exc.__cause__, exc.__context__):
        if candidate is None:
            continue
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if state:
            return str(state)
    return None


def make_tap(hub: Hub, alias: str, vendor: str,
             error_listeners: list[Callable[[BaseException, Any, QueryRow], None]] | None = None
             ) -> Any:
    """An execute_wrapper for one Django connection object: the hot path of the whole plugin.

    A closure rather than an object with __call__: calling a plain function costs half as much,
    and everything it needs per query is a cell variable.
    """
    thread = threading.current_thread()
    thread_ident = thread.ident
    with hub.catalog.lock:
        conn_index = hub.catalog.add(hub.catalog.conns, ConnInfo(alias, vendor, thread.name))
    classifier = hub.classifier
    kinds = classifier.kinds
    site_index = classifier.site_index
    resolve_context = classifier.resolve
    fingerprinter = hub.fingerprinter
    by_sql = fingerprinter.by_sql
    # Decided once per connection from the session's rules, so that a rule that is off costs
    # nothing per query: the SQL+parameters digest (duplicate) and the walk past the call
    # site looking for a rendering template (template-query).
    param_keys = hub.collect_param_keys
    watch_templates = hub.watch_templates
    explain_capture = hub.explain_capture  # --dbguard-explain only
    shared_rows = hub.shared_rows  # one list for the session: cleared, never replaced

    shapes = hub.catalog.shapes
    def dbguard_tap(execute: Any, sql: str, params: Any, many: bool,
                    context: dict[str, Any]) -> Any:
        rows = hub.rows
        if rows is None:
            return execute(sql, params, many, context)
        if rows is shared_rows:
            # a session/module-scoped fixture's query (pytest-django's database set-up, its
            # migrations): the session only counts them (Hub.shared_fixture)
            rows.append(SHARED_ROW)
            return execute(sql, params, many, context)
        failure: BaseException | None = None
        start = perf_counter()
        try:
            return execute(sql, params, many, context)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            duration = perf_counter() - start
            shape = by_sql.get(sql)
            if shape is None:
                shape = fingerprinter.index_of(sql)
            query_context = load = 0
            unit = hub.unit
            if hub.harness_phase and shapes[shape].is_transaction_control:
                # pytest-django's savepoints around a test's set-up and teardown: no call site
                # (nothing reads one for transaction control) and no walk
                site: int | None = NO_SITE
            else:
                caller: Any = _getframe(1)
                anchor = caller.f_back
                if anchor is not None:
                    anchor = anchor.f_back
                # Call site: the loop of callsite.find_user_site, inlined (one call less
                # per query), from the code that called the cursor: the two frames below it
                # are Django's CursorWrapper.execute and _execute_with_wrappers
                frame: Any = anchor if anchor is not None else caller
                fallback = None
                marks = None
                harness = None  # the first frame of Django's test harness met, if any
                while frame is not None:
                    kind = kinds.get(id(frame.f_code))
                    if kind is None:
                        kind = classifier.classify(frame.f_code)
                    if kind == USER:
                        break
                    if kind == THIRD_PARTY:
                        if fallback is None:
                            fallback = frame
                    elif kind >= MARK:
                        if kind == WALK_STOP:  # pytest's loop from here on: no user frame
                            frame = None
                            break
                        if marks is None:
                            marks = [frame]
                        else:
                            marks.append(frame)
                        if kind == IN_HARNESS:
                            if harness is None:
                                known = hub.harness_walk
                                if frame is known[0] and frame.f_lasti == known[1]:
                                    # the harness (a flush and its post_migrate handlers, a
                                    # fixture load) runs many queries from one live frame:
                                    # outward from it the walk ends as it did last time
                                    marks.extend(known[4])
                                    if fallback is None:
                                        fallback = known[3]
                                    frame = known[2]
                                    break
                                harness = frame
                                harness_at = len(marks)
                                harness_alone = fallback is None
                            if fallback is None:
                                # pytest-django's fixture called this harness frame: nothing
                                # further out ran the query (framekinds.DB_FIXTURE)
                                outer = frame.f_back
                                if (outer is not None
                                        and kinds.get(id(outer.f_code)) == DB_FIXTURE):
                                    frame = outer = None
                                    break
                    frame = frame.f_back
                if (harness is not None and harness_alone
                        and not harness.f_code.co_flags & _SUSPENDABLE):
                    assert marks is not None
                    hub.harness_walk = (harness, harness.f_lasti, frame, fallback,
                                        tuple(marks[harness_at:]))
                del harness
                user = frame
                if frame is None:
                    frame = fallback
                site = NO_SITE
                if frame is not None:
                    by_offset = site_index.get(id(frame.f_code))
                    site = by_offset.get(frame.f_lasti) if by_offset is not None else None
                    if site is None:
                        site = classifier.add_site(frame)
                else:  # asgiref's executor thread: the line that awaited sync_to_async
                    site = awaited_site()
                if marks is not None or watch_templates:
                    query_context, load = resolve_context(marks, user, watch_templates)
                marks = None
                del frame, fallback
                if not unit:
                    body = hub.body
                    if body is not None:
                        unit = body.unit_for(user, caller, query_context)
                del caller, anchor, user
            flags = FLAG_MANY if many else 0
            if context["connection"].in_atomic_block:
                flags |= FLAG_IN_ATOMIC
            if _get_running_loop() is not None:
                flags |= FLAG_IN_EVENT_LOOP
            if param_keys:
                # a digest of the SQL text with its parameters, equal for equal statements
                try:
                    digest = hash((sql, tuple(params) if type(params) is list else params))
                except TypeError:  # unhashable parameters (arrays, JSON): compare their text
                    digest = hash((sql, repr(params)))
                flags |= (digest & PARAM_KEY_MASK) << PARAM_KEY_SHIFT
            extra: dict[str, Any] | None = None
            if hub.show_params:
                extra = {"sql": sql, "params": _redact_params(params)}
            if failure is not None:
                flags |= FLAG_ERROR
                extra = extra or {}
                extra["error"] = f"{type(failure).__name__}: {failure}".strip()
                extra["sqlstate"] = _sqlstate(failure)
            if _get_ident() != thread_ident:
                flags |= FLAG_FOREIGN_THREAD
                extra = extra or {}
                extra["thread"] = threading.current_thread().name
            if load:
                # the instance whose relation loaded came with others from one query
                extra = extra or {}
                extra["load"] = load
            row = (shape, site, query_context, conn_index, unit, flags, duration, extra)
            rows.append(row)
            if explain_capture is not None and failure is None and not many:
                explain_capture(shape, sql, params, context["connection"], site)
            if failure is not None and error_listeners:
                # rare path: lifecycle rules follow the exception to where it was caught
                for listener in error_listeners:
                    listener(failure, context["connection"], row)
    dbguard_tap.dbguard_hub = hub  # type: ignore[attr-defined]
    dbguard_tap.conn_index = conn_index  # type: ignore[attr-defined]
    return dbguard_tap


def _backend_pid(raw: Any) -> int | None:
    info = getattr(raw, "info", None)  # psycopg 3
    pid = getattr(info, "backend_pid", None)
    if pid is None and hasattr(raw, "get_backend_pid"):  # psycopg2
        try:
            pid = raw.get_backend_pid()
        except Exception:
            pid = None
    return pid


class DjangoTaps:
    """Installs taps on existing and future connections, and follows requests as units of work.

    It also keeps the ledger of connections: every Django connection object it tapped (any
    thread, any test) in `wrappers`, and per test the ones opened while the test ran in
    `recorder.connections`, so lifecycle rules can tell which of them were left open.
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.installed = False
        self.wrappers: weakref.WeakSet[Any] = weakref.WeakSet()
        # called with (exception, connection, row) when a recorded query fails
        self.error_listeners: list[Callable[[BaseException, Any, QueryRow], None]] = []
        # the Django connection objects of the thread running the current test
        self.test_thread_wrappers: list[Any] = []

    def install(self) -> None:
        if self.installed:
            return
        from django.core import signals as core_signals
        from django.db import connections
        from django.db.backends.signals import connection_created

        connection_created.connect(self._on_connection_created, weak=False,
                                   dispatch_uid=_DISPATCH_UID)
        core_signals.request_started.connect(self._on_request_started, weak=False,
                                             dispatch_uid=_DISPATCH_UID)
        core_signals.request_finished.connect(self._on_request_finished, weak=False,
                                              dispatch_uid=_DISPATCH_UID)
        for conn in connections.all(initialized_only=True):
            self.tap(conn)
        self.installed = True

    def tap(self, conn: Any) -> Any:
        self.wrappers.add(conn)
        for wrapper in conn.execute_wrappers:
            if getattr(wrapper, "dbguard_hub", None) is self.hub:
                return wrapper
        tap = make_tap(self.hub, conn.alias, conn.vendor, self.error_listeners)
        # Outermost position: Django's execute_wrapper() context manager pops the *last* item,
        # so a user wrapper entered before this connection opened still pops itself.
        conn.execute_wrappers.insert(0, tap)
        return tap

    def open_now(self, recorder: TestRecorder) -> list[str]:
        """Connections open right now that belong to this test, described for a report: the
        test thread's Django connections and whatever the test opened (any thread, any
        driver). Connections an earlier test leaked were reported there and do not count."""
        seen: set[int] = set()
        described = []
        for wrapper in self.test_thread_wrappers:
            if wrapper.connection is not None:
                seen.add(id(wrapper))
                described.append(f"{wrapper.alias} ({wrapper.vendor}) of the test thread")
        for entry in recorder.connections:
            wrapper = entry.wrapper
            if (wrapper is not None and id(wrapper) in seen) or entry.shared:
                continue
            if not entry.is_closed():
                site = f" at {entry.site}" if entry.site else ""
                described.append(f"{entry.alias} ({entry.vendor}) opened by thread "
                                 f"{entry.thread}{site} during {entry.phase}")
        return described

    def note_peak(self, recorder: TestRecorder) -> None:
        described = self.open_now(recorder)
        if len(described) > recorder.peak_connections:
            recorder.peak_connections = len(described)
            recorder.facts["peak_connections"] = sorted(described)

    def _on_connection_created(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        self.tap(connection)
        for hook in self.hub.connection_hooks:
            hook(connection)
        recorder = self.hub.recorder
        if recorder is None or recorder.current_phase is None:
            return
        if self.hub.rows is self.hub.shared_rows:
            # opened by a session/module-scoped fixture (pytest-django's database set-up): it
            # belongs to the session like that fixture's queries, not to whichever test
            # happened to run first (which differs with and without xdist)
            return
        raw = connection.connection
        raw_ref = weakref.ref(raw) if _weakrefable(raw) else None
        conn_ref = weakref.ref(connection)

        def is_closed() -> bool:
            wrapper = conn_ref()
            if wrapper is None:
                return True
            current = wrapper.connection
            return current is None or (raw_ref is not None and current is not raw_ref())

        frame = sys._getframe(1)
        site_i = find_user_site(self.hub.classifier, frame)
        thread = threading.current_thread()
        recorder.vendors.add(connection.vendor)
        recorder.connections.append(LedgerEntry(
            kind="django",
            alias=connection.alias,
            vendor=connection.vendor,
            thread=thread.name,
            phase=recorder.current_phase,
            pid=_backend_pid(raw),
            site=self.hub.catalog.sites[site_i] if site_i != NO_SITE else None,
            shared=self.hub.rows is self.hub.shared_rows,
            is_closed=is_closed,
            thread_ident=thread.ident,
            thread_ref=weakref.ref(thread),
            via=_opened_via(frame),
            closable=not _in_memory(connection),
            wrapper=connection,
        ))
        self.note_peak(recorder)

    def _on_request_started(self, sender: Any, environ: Any = None, scope: Any = None,
                            **kwargs: Any) -> None:
        if environ is not None:
            label = f"{environ.get('REQUEST_METHOD', '?')} {environ.get('PATH_INFO', '')}"
        elif scope is not None:
            label = f"{scope.get('method', '?')} {scope.get('path', '')}"
        else:
            label = "request"
        self.hub.begin_unit(label)

    def _on_request_finished(self, sender: Any, **kwargs: Any) -> None:
        self.hub.end_unit()


def _in_memory(connection: Any) -> bool:
    check = getattr(connection, "is_in_memory_db", None)
    try:
        return bool(check()) if check is not None else False
    except Exception:
        return False


def _opened_via(frame: Any) -> str | None:
    """'sync_to_async' when asgiref's executor thread runs the code that connected."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "thread_handler" and code.co_filename.endswith(
                os.path.join("asgiref", "sync.py")):
            return "sync_to_async"
        frame = frame.f_back
    return None


def _weakrefable(obj: Any) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True
