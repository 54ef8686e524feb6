"""Transaction and connection state at the end of each phase, and where database errors were caught.

Reads public state only (`in_atomic_block`, `atomic_blocks`, `needs_rollback`, `autocommit`, the
driver's transaction status); it never runs SQL and never opens a connection.
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time
from collections.abc import Callable, Iterable
from operator import itemgetter
from types import TracebackType
from typing import Any

from ..events import FLAG_IN_EVENT_LOOP, NO_SITE, ROW_FLAGS, QueryRow
from ..facts import CaughtDbError, ThreadConnection
from ..text import first_line
from .atomic_exits import AtomicExits
from .callsite import THIRD_PARTY, USER, FrameClassifier
from .connstates import States, connection_state
from .django_db import DjangoTaps
from .fingerprint import short_sql
from .ledger import LedgerEntry
from .recorder import Hub, TestRecorder

# How long a connection of a still-running thread may take to close after teardown. Django's
# live server closes a request's connection after the response went out, so the test can get
# there first; everything else waits for nothing.
SETTLE_S = 0.5
_POLL_S = 0.005
# Whether a caught exception was caught by the test's own code: pytest's default python_files.
DEFAULT_TEST_FILES = ("test_*.py", "*_test.py", "conftest.py")


class CaughtError:
    """A failed query's exception, kept until the test is judged to see who caught it."""

    __slots__ = ("exc", "alias", "thread_ident", "thread", "phase", "row")

    def __init__(self, exc: BaseException, alias: str, thread: threading.Thread, phase: str,
                 row: QueryRow) -> None:
        self.exc = exc
        self.alias = alias
        self.thread_ident = thread.ident
        self.thread = thread.name
        self.phase = phase
        self.row = row


class LifecycleProbe:
    """Transaction state per phase, Django connections left open, and swallowed errors."""

    name = "lifecycle"

    def __init__(self, hub: Hub, taps: DjangoTaps,
                 test_file_patterns: Iterable[str] = DEFAULT_TEST_FILES,
                 exits: AtomicExits | None = None) -> None:
        self.hub = hub
        self.exits = exits
        self.taps = taps
        self.test_file_patterns = tuple(test_file_patterns)
        self.test_ident: int | None = None
        self.errors: list[CaughtError] = []
        # the test whose other-thread connections were judged (and closed) before teardown ended
        self._frozen: TestRecorder | None = None
        self._states = States()
        # Whether a Django connection opened (any thread) since the test thread's connection
        # objects were last listed, and on which thread that list was taken (see _wrappers)
        self._opened = True
        self._listed_on: int | None = None
        taps.error_listeners.append(self.note_error)
        hub.connection_hooks.append(self._connection_opened)

    # -- probe protocol ----------------------------------------------------------------------
    def start_test(self, recorder: TestRecorder) -> None:
        self.test_ident = threading.get_ident()
        if self.errors:
            self.errors = []
        exits = self.exits
        if exits is not None and (exits.pending or exits.swallowed):
            exits.reset()
        wrappers = self._wrappers(recorder, fresh=False)
        self._note_peak(recorder, wrappers)
        recorder.facts[self.name] = {"txstate": {}, "errors": [], "connections": [],
                                     "test_ident": self.test_ident}

    def end_phase(self, recorder: TestRecorder, phase: str) -> None:
        # The test thread's connection may have opened during a shared fixture (database
        # set-up) after start_test looked: count it at every phase end so the peak does not
        # depend on which test happened to run first in this process. After teardown only
        # the peak reads the list: with no connection opened since the end of the call, the
        # count cannot have risen (see _wrappers).
        facts: dict[str, Any] | None = recorder.facts.get(self.name)
        if facts is None:
            facts = recorder.facts[self.name] = {"txstate": {}, "errors": [],
                                                 "connections": []}
        if phase == "teardown":
            if self._opened or self._listed_on != self.test_ident:
                self._note_peak(recorder, self._wrappers(recorder, fresh=True))
            if self._frozen is not recorder and recorder.connections:
                facts["connections"] = self._other_thread_connections(recorder)
            self._frozen = None
            # the exceptions (and the frames their tracebacks hold) are no longer needed
            if self.errors:
                self.errors = []
            exits = self.exits
            if exits is not None and (exits.pending or exits.swallowed):
                exits.reset()
            return
        wrappers = self._wrappers(recorder, fresh=True)
        self._note_peak(recorder, wrappers)
        # open-transaction compares the end of setup with the end of the call; nothing reads
        # the state after teardown, where pytest-django has rolled back anyway
        state = self._states.of
        facts["txstate"][phase] = [state(conn) for conn in wrappers]
        if phase == "call":
            if self.errors:  # a query failed in the body (the taps told note_error)
                facts["errors"] = self._caught_errors()
            if _on_event_loop(recorder.phase_rows.get("call")) or _on_event_loop(
                    recorder.phase_rows.get("setup")):
                # async-orm reads it when such a query ran, and the environment may change
                # after the body (a fixture's monkeypatch.setenv is undone at teardown)
                facts["allow_async_unsafe"] = bool(os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE"))

    def before_shared_teardown(self, recorder: TestRecorder) -> None:
        """The test's own fixtures are torn down and a shared one (pytest-django's database)
        is next: judge and close other threads' connections now, while the database exists."""
        if self._frozen is recorder:
            return
        if recorder.connections:
            facts = recorder.facts.get(self.name)
            if facts is None:
                facts = recorder.facts[self.name] = {"txstate": {}, "errors": [],
                                                     "connections": []}
            facts["connections"] = self._other_thread_connections(recorder)
        self._frozen = recorder

    # -- the test thread's connections and the peak of open connections ----------------------
    def _connection_opened(self, connection: Any) -> None:
        self._opened = True

    def _wrappers(self, recorder: TestRecorder, fresh: bool) -> list[Any]:
        """The test thread's Django connection objects (recorder.test_thread_wrappers), also
        kept in DjangoTaps for the peak counted when a connection opens during the test.

        Only the peak reads them at the start of a test: the list taken when the last test
        ended serves, unless a connection opened since (each opening sets `_opened` before
        anyone can see it; an object made without connecting is not open, so it is not
        counted either way) or the test runs on another thread.
        """
        ident = threading.get_ident()
        if fresh or self._opened or self._listed_on != ident:
            self._opened = False  # before listing: an opening from now on lists again
            self.taps.test_thread_wrappers = recorder.test_thread_wrappers()
            self._listed_on = ident
        return self.taps.test_thread_wrappers

    def _note_peak(self, recorder: TestRecorder, wrappers: list[Any]) -> None:
        """The peak of open connections (DjangoTaps.note_peak), skipped when it cannot rise:
        with no connection in the test's ledger, what is open is the test thread's own."""
        if not recorder.connections:
            open_now = 0
            for wrapper in wrappers:
                if wrapper.connection is not None:
                    open_now += 1
            if open_now <= recorder.peak_connections:
                return
        self.taps.note_peak(recorder)

    # -- errors --------------------------------------------------------------------------------
    def note_error(self, exc: BaseException, wrapper: Any, row: QueryRow) -> None:
        recorder = self.hub.recorder
        if recorder is None or recorder.current_phase != "call":
            return
        self.errors.append(CaughtError(exc, wrapper.alias, threading.current_thread(),
                                       recorder.current_phase, row))
        if self.exits is not None:
            self.exits.watch(exc, wrapper)

    def _caught_errors(self) -> list[CaughtDbError]:
        catalog = self.hub.catalog
        swallowed = self.exits.swallowed if self.exits is not None else {}
        out = []
        for error in self.errors:
            exc = error.exc
            shape_i, site_i, _, _, _, _, _, extra = error.row
            shape = catalog.shapes[shape_i]
            caught_in, caught_at, caught_by = self._catcher(exc.__traceback__)
            out.append(CaughtDbError(
                exc_id=id(exc),
                type=type(exc).__name__,
                message=first_line(exc),
                sqlstate=(extra or {}).get("sqlstate"),
                sql=short_sql(shape.fingerprint),
                site=str(catalog.sites[site_i]) if site_i != NO_SITE else None,
                alias=error.alias,
                thread_ident=error.thread_ident,
                thread=error.thread,
                caught_in=caught_in,
                caught_at=caught_at,
                caught_by=caught_by,
                in_block=swallowed.get(id(exc)),
            ))
        return out

    def _catcher(self, tb: TracebackType | None) -> tuple[str, str | None, str]:
        """Where an exception stopped: the outermost frame its traceback reached.

        "test" when that is the test's own code (pytest.raises, try/except in a test or
        fixture), "code" when the project or a library caught it, "internal" for Django,
        pytest and the plugin (including an exception still on its way out of the test).
        """
        if tb is None:
            return "?", None, "internal"
        frame, line = tb.tb_frame, tb.tb_lineno
        classifier = self.hub.classifier
        kind = classifier.kinds.get(id(frame.f_code))
        if kind is None:
            kind = classifier.classify(frame.f_code)
        path = classifier.display_path(frame.f_code.co_filename)
        if kind == USER:
            by = "test" if self._is_test_file(frame.f_code.co_filename) else "code"
        else:
            by = "code" if kind == THIRD_PARTY else "internal"
        return frame.f_code.co_name, f"{path}:{line}", by

    def _is_test_file(self, filename: str) -> bool:
        base = os.path.basename(filename)
        return any(fnmatch.fnmatch(base, pattern) for pattern in self.test_file_patterns)

    # -- connections ---------------------------------------------------------------------------
    def _other_thread_connections(self, recorder: TestRecorder) -> list[ThreadConnection]:
        """Django connections other threads opened during the test, as they are after teardown."""
        if not recorder.connections:  # the test opened no connection (the rule in a suite)
            return []
        tracked = [c for c in recorder.connections
                   if c.kind == "django" and c.wrapper is not None]
        candidates = [c for c in tracked
                      if c.thread_ident != self.test_ident and not c.shared and c.closable]
        _settle(candidates)
        out = []
        for entry in candidates:
            thread = entry.thread_ref() if entry.thread_ref is not None else None
            closed = entry.is_closed()
            out.append(ThreadConnection(
                alias=entry.alias, vendor=entry.vendor, thread=entry.thread,
                thread_alive=thread is not None and thread.is_alive(),
                phase=entry.phase, pid=entry.pid,
                site=str(entry.site) if entry.site is not None else None, via=entry.via,
                open=not closed, state=connection_state(entry.wrapper) if not closed else None,
            ))
        for entry in tracked:
            # freeze what the report says, then let the connection objects go
            closed_at_end = entry.is_closed()
            entry.is_closed = _constant(closed_at_end)
            if not closed_at_end and entry.thread_ident != self.test_ident:
                # reported above; closed now, so that pytest-django can drop the test
                # database and a later test's leak is that test's own (even when the thread
                # lives on, as asgiref's executor threads do)
                _close_orphan(entry.wrapper)
            entry.wrapper = None
        return out


_FLAGS_OF = itemgetter(ROW_FLAGS)
_IN_EVENT_LOOP = FLAG_IN_EVENT_LOOP.__and__


def _on_event_loop(rows: list[QueryRow] | None) -> bool:
    """Whether a query of these rows ran on a thread with a running event loop (in C)."""
    return rows is not None and any(map(_IN_EVENT_LOOP, map(_FLAGS_OF, rows)))


def _settle(candidates: list[LedgerEntry]) -> None:
    """Give running threads a moment to close connections they are about to close."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        waiting = False
        for entry in candidates:
            thread = entry.thread_ref() if entry.thread_ref is not None else None
            if thread is not None and thread.is_alive() and not entry.is_closed():
                waiting = True
        if not waiting:
            return
        time.sleep(_POLL_S)


def _close_orphan(wrapper: Any) -> None:
    """Close a leaked connection of another thread: reported once, it must not haunt later tests.

    Left alone it would stay connected until its thread or the garbage collector lets go,
    holding its server backend (and its locks, when it was left in a transaction), and
    pytest-django could not drop the test database at the end of the run.
    """
    try:
        wrapper.inc_thread_sharing()
        try:
            wrapper.close()
        finally:
            wrapper.dec_thread_sharing()
    except Exception:
        pass  # best effort: the finding is what matters


def _constant(value: bool) -> Callable[[], bool]:
    return lambda: value


def exception_chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and all(exc is not e for e in seen):
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def describe_raised(classifier: FrameClassifier, exc: BaseException) -> dict[str, Any]:
    """Plain facts about the exception a phase ended with, for the lifecycle rules."""
    chain = exception_chain(exc)
    facts: dict[str, Any] = {
        "type": type(exc).__name__,
        "exc_ids": [id(e) for e in chain],
    }
    sync_only = next((e for e in chain if type(e).__name__ == "SynchronousOnlyOperation"), None)
    if sync_only is not None:
        facts["sync_only_site"] = innermost_user_site(classifier, sync_only.__traceback__)
    return facts


def innermost_user_site(classifier: FrameClassifier, tb: TracebackType | None) -> str | None:
    """The deepest frame of the project's own code in a traceback: the line that called in."""
    site = None
    while tb is not None:
        code = tb.tb_frame.f_code
        kind = classifier.kinds.get(id(code))
        if kind is None:
            kind = classifier.classify(code)
        if kind == USER:
            site = f"{classifier.display_path(code.co_filename)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return site
