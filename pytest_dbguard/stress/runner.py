"""Runs one test body in N threads per round, released together by a barrier; never hangs.

Each thread has its own Django connections (Django keeps them per thread) and closes them when
its body returns, so the plugin's threads never look like leaked connections. A round that is
not finished by its timeout is a hang: every stressed thread's stack is dumped, the watchdog
cancels then terminates the backends those threads opened (and only those), and threads that
still do not return are abandoned as daemon threads so the session goes on.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

from ..backends import for_vendor
from ..text import first_line
from . import StressPlan
from .watchdog import (
    DEADLOCK,
    LOCK_NOT_AVAILABLE,
    QUERY_CANCELED,
    Backend,
    BackendRegistry,
    Watchdog,
    connect_params,
    parse_deadlock_detail,
    sqlstate_of,
)

# Start jitter per thread and round, drawn from the seed: the part of the interleaving the
# plugin controls, so a seed repeats it (the OS scheduler still does the rest).
JITTER_S = 0.002
# After a hang: time the threads get to return once their statements are cancelled, then once
# their backends are terminated. Both together stay well inside the promised 2 s.
CANCEL_GRACE_S = 0.4
TERMINATE_GRACE_S = 0.8
# Innermost frames of each stuck thread shown in the terminal (the JSON keeps them all).
STACK_FRAMES_SHOWN = 10
THREAD_PREFIX = "dbguard-stress-"
_WATCHED_SQLSTATES = (DEADLOCK, LOCK_NOT_AVAILABLE, QUERY_CANCELED)

# A context variable, not a thread-local: asgiref carries it into an async body's event loop
# and back into the ORM calls that body makes through sync_to_async.
_INDEX: contextvars.ContextVar[int | None] = contextvars.ContextVar("dbguard_stress_index",
                                                                     default=None)


def current_index() -> int | None:
    """The stressed thread's index (0..N-1), or None outside a stressed thread."""
    return _INDEX.get()


SiteOf = Callable[[FrameType | None], str | None]


@dataclass
class ThreadError:
    index: int
    round: int
    at_ms: float
    exc: BaseException
    site: str | None
    # raised after the round's timeout, when dbguard cancelled the thread's statement
    after_hang: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "thread": self.index,
            "round": self.round,
            "at_ms": round(self.at_ms, 1),
            "type": type(self.exc).__name__,
            "message": first_line(self.exc),
            "sqlstate": sqlstate_of(self.exc),
            "site": self.site,
            "after_hang": self.after_hang,
        }


@dataclass
class RoundResult:
    index: int
    duration_ms: float = 0.0
    errors: list[ThreadError] = field(default_factory=list)
    # database errors the threads met, caught or not (deadlock, nowait, cancel)
    db_errors: list[dict[str, Any]] = field(default_factory=list)
    hung: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.index,
            "duration_ms": round(self.duration_ms, 1),
            "errors": [e.to_dict() for e in self.errors],
            "db_errors": self.db_errors,
            "hung": self.hung,
        }


class StressRunner:
    """One stressed test: `rounds` rounds of `threads` threads running `func(**kwargs)`."""

    def __init__(self, plan: StressPlan, func: Callable[..., Any], kwargs: dict[str, Any],
                 nodeid: str, site_of: SiteOf, transactional: bool,
                 display_path: Callable[[str], str] = str,
                 site_of_frame: SiteOf | None = None) -> None:
        self.plan = plan
        # the site of one frame only if it is user code (None otherwise)
        self.site_of_frame = site_of_frame or (lambda frame: None)
        self.display_path = display_path
        self.func = func
        self.kwargs = kwargs
        self.nodeid = nodeid
        self.site_of = site_of
        self.transactional = transactional
        self.is_async = inspect.iscoroutinefunction(func)
        self.rounds: list[RoundResult] = []
        self.registry = BackendRegistry()
        self.watchdog: Watchdog | None = None
        self.vendor: str | None = None
        self.lock_analysis: str = "on"
        self.hang: dict[str, Any] | None = None
        self._rng = random.Random(f"{plan.seed}:{nodeid}")
        self._current_round: RoundResult | None = None
        self._round_started = 0.0
        self._uid = f"pytest_dbguard.stress.{id(self)}"
        # (round, thread) -> the Django connection objects that thread opened
        self._wrappers: dict[tuple[int, int], list[Any]] = {}

    # -- public -------------------------------------------------------------------------
    def run(self) -> None:
        self._start_analysis()
        try:
            for index in range(1, self.plan.rounds + 1):
                result = self._run_round(index)
                self.rounds.append(result)
                if result.hung:
                    break
        finally:
            self._stop_analysis()

    @property
    def errors(self) -> list[ThreadError]:
        """Failures of the test's own making: not the ones dbguard caused by stopping a hang."""
        return [e for r in self.rounds for e in r.errors if not e.after_hang]

    def facts(self) -> dict[str, Any]:
        """The plain-data result the stress rules and the JSON report read."""
        watch = self.watchdog
        return {
            "threads": self.plan.threads,
            "rounds_planned": self.plan.rounds,
            "rounds_run": len(self.rounds),
            "timeout_s": self.plan.timeout,
            "seed": self.plan.seed,
            "async": self.is_async,
            "vendor": self.vendor,
            "lock_analysis": self.lock_analysis,
            "lock_wait_ms": self.plan.lock_wait_ms,
            "rounds": [r.to_dict() for r in self.rounds],
            "deadlocks": self._deadlocks(),
            "lock_waits": watch.lock_waits(self.plan.lock_wait_ms) if watch else [],
            "graph": watch.worst_graph() if watch else None,
            "samples": watch.samples if watch else 0,
            "hang": self.hang,
        }

    # -- database analysis --------------------------------------------------------------
    def _start_analysis(self) -> None:
        from django.db import DEFAULT_DB_ALIAS, connections
        from django.db.backends.signals import connection_created

        connection_created.connect(self._on_connection_created, weak=False,
                                   dispatch_uid=self._uid)
        conn = connections[DEFAULT_DB_ALIAS]
        self.vendor = conn.vendor
        if not for_vendor(conn.vendor).samples_locks:
            self.lock_analysis = (f"lock analysis needs PostgreSQL (this run uses {conn.vendor}); "
                                  "threads ran and their errors are reported")
            return
        params = connect_params(conn.settings_dict)
        watchdog = Watchdog(params, self.registry, self.site_of, self.plan.show_params)
        problem = watchdog.start()
        if problem is not None:
            self.lock_analysis = problem
            return
        self.watchdog = watchdog

    def _stop_analysis(self) -> None:
        from django.db.backends.signals import connection_created

        connection_created.disconnect(dispatch_uid=self._uid)
        if self.watchdog is not None:
            self.watchdog.stop()

    def _on_connection_created(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        index = current_index()
        if index is None:
            return
        # Outermost, like the recorder's tap: a user's execute_wrapper() block pops the last one.
        connection.execute_wrappers.insert(0, self._observer(index, connection.alias))
        if self._current_round is not None:
            self._wrappers.setdefault((self._current_round.index, index), []).append(connection)
        if not for_vendor(connection.vendor).samples_locks:
            return  # no watchdog: nothing to map backend pids to threads for
        from ..recording.django_db import _backend_pid

        pid = _backend_pid(connection.connection)
        if pid is not None:
            self.registry.add(Backend(pid=pid, thread=index, ident=threading.get_ident(),
                                      alias=connection.alias,
                                      round=self._current_round.index
                                      if self._current_round else 0), connection)

    def _observer(self, index: int, alias: str) -> Callable[..., Any]:
        """Sees every database error a thread meets, also the ones its code catches and retries."""

        def dbguard_stress_observer(execute: Any, sql: str, params: Any, many: bool,
                                    context: dict[str, Any]) -> Any:
            try:
                return execute(sql, params, many, context)
            except Exception as exc:
                state = sqlstate_of(exc)
                current = self._current_round
                if state in _WATCHED_SQLSTATES and current is not None:
                    current.db_errors.append({
                        "thread": index,
                        "alias": alias,
                        "sqlstate": state,
                        "at_ms": round((time.perf_counter() - self._round_started) * 1000, 1),
                        "site": self.site_of(sys._getframe(1)),
                        "sql": self.watchdog.show_sql(sql) if self.watchdog else None,
                        "detail": parse_deadlock_detail(exc) if state == DEADLOCK else None,
                    })
                raise

        return dbguard_stress_observer

    def _deadlocks(self) -> list[dict[str, Any]]:
        """Every 40P01 a thread met, with the cycle the watchdog saw and whether it propagated."""
        propagated = {(e.round, e.index) for e in self.errors if sqlstate_of(e.exc) == DEADLOCK}
        out = []
        for result in self.rounds:
            for db_error in result.db_errors:
                if db_error["sqlstate"] != DEADLOCK:
                    continue
                victim_pid = None
                detail = db_error.get("detail") or {}
                for backend in self.registry.of_round(result.index):
                    if backend.thread == db_error["thread"] and backend.alias == db_error["alias"]:
                        victim_pid = backend.pid
                cycle = (self.watchdog.cycle_for(result.index, victim_pid,
                                                 detail.get("pids", ()))
                         if self.watchdog else None)
                if cycle is not None:
                    for side in cycle["sides"]:
                        if side["site"] is None and side["thread"] == db_error["thread"]:
                            side["site"] = db_error["site"]  # the victim's aborted statement
                key = (result.index, db_error["thread"])
                out.append({
                    "round": result.index,
                    "thread": db_error["thread"],
                    "at_ms": db_error["at_ms"],
                    "site": db_error["site"],
                    "sql": db_error["sql"],
                    "detail": detail,
                    "victim_pid": victim_pid,
                    "propagated": key in propagated,
                    "sides": cycle["sides"] if cycle else self._sides_from_detail(detail),
                    "seen_by_watchdog": cycle is not None,
                    "seen_after_ms": cycle["seen_after_ms"] if cycle else None,
                })
                propagated.discard(key)
        return out

    def _sides_from_detail(self, detail: dict[str, Any]) -> list[dict[str, Any]]:
        """Without a watchdog sample of the cycle: what PG's error detail alone tells."""
        sides = []
        for wait in detail.get("waits", ()):
            backend = self.registry.get(wait["pid"])
            sides.append({
                "pid": wait["pid"],
                "thread": backend.thread if backend else None,
                "sql": None,
                "site": None,
                "waits_for": {"mode": wait["mode"], "object": wait["object"],
                              "relation": detail.get("relation"), "row": None},
                "blocked_by": [wait["blocker"]],
            })
        return sides

    # -- one round ----------------------------------------------------------------------
    def _run_round(self, index: int) -> RoundResult:
        plan = self.plan
        result = RoundResult(index)
        self._current_round = result
        barrier = threading.Barrier(plan.threads + 1)
        done = [threading.Event() for _ in range(plan.threads)]
        threads = [
            threading.Thread(target=self._thread_main, name=f"{THREAD_PREFIX}{i}",
                             args=(i, result, barrier, done[i], self._rng.random() * JITTER_S),
                             daemon=True)
            for i in range(plan.threads)
        ]
        for thread in threads:
            thread.start()
        # a thread that cannot even connect in time breaks the barrier: the deadline handles it
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=plan.timeout)
        started = self._round_started = time.perf_counter()
        if self.watchdog is not None:
            self.watchdog.begin_round(index, started)
        deadline = started + plan.timeout
        for event in done:
            event.wait(max(0.0, deadline - time.perf_counter()))
        if not all(e.is_set() for e in done):
            result.hung = True
            self._handle_hang(result, threads, done, started)
        result.duration_ms = (time.perf_counter() - started) * 1000.0
        if self.watchdog is not None:
            self.watchdog.end_round()
        self._current_round = None
        return result

    def _thread_main(self, index: int, result: RoundResult, barrier: threading.Barrier,
                     done: threading.Event, jitter: float) -> None:
        _INDEX.set(index)
        try:
            if self.transactional:
                self._connect()
        except Exception as exc:
            result.errors.append(ThreadError(index, result.index, 0.0, exc,
                                             self._site_of_traceback(exc.__traceback__)))
        try:
            barrier.wait(timeout=self.plan.timeout)
            if result.errors and any(e.index == index for e in result.errors):
                return
            time.sleep(jitter)
            if self.is_async:
                # async_to_sync gives this thread an event loop of its own, and sends the body's
                # thread-sensitive ORM calls (sync_to_async) back to this thread: they use this
                # thread's connections, which are closed below.
                from asgiref.sync import async_to_sync

                async_to_sync(self.func)(**self.kwargs)
            else:
                self.func(**self.kwargs)
        except threading.BrokenBarrierError:
            pass
        except BaseException as exc:  # pytest.fail / skip are BaseExceptions too
            at_ms = (time.perf_counter() - self._round_started) * 1000.0
            result.errors.append(ThreadError(index, result.index, at_ms, exc,
                                             self._site_of_traceback(exc.__traceback__)))
        finally:
            self._close_connections()
            done.set()

    @staticmethod
    def _connect() -> None:
        # Connected before the barrier: the race starts at the first statement, not at login,
        # and the watchdog knows every backend from the start.
        from django.db import DEFAULT_DB_ALIAS, connections

        connections[DEFAULT_DB_ALIAS].ensure_connection()

    @staticmethod
    def _close_connections() -> None:
        from django.db import connections

        for conn in connections.all(initialized_only=True):
            # a terminated backend may fail to close cleanly; it is gone either way
            with contextlib.suppress(Exception):
                for_vendor(conn.vendor).close(conn)

    def _close_abandoned(self, round_index: int, index: int, terminated: list[int]) -> None:
        """Close the Django connections of a thread left behind, once their backend is gone.

        The thread waits in Python, not in the driver, and its server backend was terminated:
        closing the client side from here is safe, and the plugin's own thread does not leave a
        connection open. Connections of other vendors (nothing was terminated) stay as they are.
        """
        for conn in self._wrappers.get((round_index, index), ()):
            backend = self.registry.pid_of(conn)
            if not for_vendor(conn.vendor).samples_locks or backend not in terminated:
                continue
            try:
                conn.inc_thread_sharing()
                conn.close()
            except Exception:
                pass  # best effort: the report already names the thread as abandoned

    def _site_of_traceback(self, tb: TracebackType | None) -> str | None:
        # The traceback's own frames, not f_back: frames that finished unwinding lose f_back.
        site = None
        while tb is not None:
            found = self.site_of_frame(tb.tb_frame)
            if found is not None:
                site = found
            tb = tb.tb_next
        return site

    # -- hangs --------------------------------------------------------------------------
    def _handle_hang(self, result: RoundResult, threads: list[threading.Thread],
                     done: list[threading.Event], started: float) -> None:
        stuck = [i for i, event in enumerate(done) if not event.is_set()]
        frames = sys._current_frames()
        stacks = {str(i): thread_stack(frames.get(t.ident or -1), self.display_path)
                  for i, t in enumerate(threads)}
        graph = self.watchdog.snapshot() if self.watchdog else None
        cancelled: list[int] = []
        terminated: list[int] = []
        if self.watchdog is not None:
            # a statement can only be cancelled while it runs; idle backends wait for terminate
            running = {n["pid"] for n in (graph or {}).get("nodes", ()) if n["state"] == "active"}
            pids = [b.pid for b in self.registry.of_round(result.index)
                    if b.thread in stuck and (graph is None or b.pid in running)]
            cancelled = self.watchdog.cancel(pids)
            _wait_all(done, CANCEL_GRACE_S)
            still = [i for i, event in enumerate(done) if not event.is_set()]
            pids = [b.pid for b in self.registry.of_round(result.index) if b.thread in still]
            if pids:
                terminated = self.watchdog.terminate(pids)
                _wait_all(done, TERMINATE_GRACE_S)
        abandoned = [i for i, event in enumerate(done) if not event.is_set()]
        for index in abandoned:
            self._close_abandoned(result.index, index, terminated)
        for error in result.errors:
            if error.index in stuck and error.at_ms >= self.plan.timeout * 1000.0:
                error.after_hang = True
        self.hang = {
            "round": result.index,
            "timeout_s": self.plan.timeout,
            "stuck_threads": stuck,
            "stacks": stacks,
            "graph": graph,
            "cancelled_pids": cancelled,
            "terminated_pids": terminated,
            "abandoned_threads": abandoned,
            "ended_after_ms": round((time.perf_counter() - started) * 1000.0, 1),
            "lock_analysis": self.lock_analysis,
        }


def _wait_all(done: list[threading.Event], seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    for event in done:
        event.wait(max(0.0, deadline - time.perf_counter()))


_OWN_FILES = (__file__.rstrip("c"), threading.__file__)


def thread_stack(frame: FrameType | None, display_path: Callable[[str], str] = str
                 ) -> list[str]:
    """The thread's stack, outermost first, without the runner's and threading's own frames."""
    if frame is None:
        return []
    entries = traceback.extract_stack(frame)
    return [
        f"{display_path(entry.filename)}:{entry.lineno} in {entry.name}"
        + (f": {entry.line.strip()}" if entry.line else "")
        for entry in entries
        if entry.filename not in _OWN_FILES
    ]
