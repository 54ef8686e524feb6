"""Runs one test body in N threads per round, released together by a barrier; never hangs.

Each thread has its own Django connections (Django keeps them per thread) and closes them when
its body returns, so the plugin's threads never look like leaked connections. Each thread's run
of the body is one thread-round (see recording/threadrounds.py): connecting before the barrier
and closing afterwards are outside it. A round that is not finished by its timeout is a hang
(hang.py); the deadlocks the threads met are put together in deadlocks.py.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import random
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import FrameType, TracebackType
from typing import Any

from ..backends import for_vendor
from ..backends.postgresql import (
    DEADLOCK,
    LOCK_NOT_AVAILABLE,
    QUERY_CANCELED,
    connect_params,
    parse_deadlock_detail,
    sqlstate_of,
)
from . import StressPlan
from .deadlocks import deadlock_events
from .facts import DbError, HangFacts, StressFacts, ThreadRoundUnit
from .hang import handle_hang
from .rounds import RoundResult, ThreadError
from .watchdog import Backend, BackendRegistry, Watchdog

# Start jitter per thread and round, drawn from the seed: the part of the interleaving the
# plugin controls, so a seed repeats it (the OS scheduler still does the rest).
JITTER_S = 0.002
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


# One run of the body by (thread, round) is entered as a unit of work (recording/threadrounds)
UnitScope = Callable[[int, int], AbstractContextManager[Any]]


def _no_scope(thread: int, round_index: int) -> AbstractContextManager[Any]:
    return contextlib.nullcontext()


class StressRunner:
    """One stressed test: `rounds` rounds of `threads` threads running `func(**kwargs)`."""

    def __init__(self, plan: StressPlan, func: Callable[..., Any], kwargs: dict[str, Any],
                 nodeid: str, site_of: SiteOf, transactional: bool,
                 display_path: Callable[[str], str] = str,
                 site_of_frame: SiteOf | None = None,
                 thread_round: UnitScope = _no_scope,
                 units: Callable[[], tuple[tuple[int, int, int], ...]] = tuple) -> None:
        self.plan = plan
        self.thread_round = thread_round
        self.units = units
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
        self.hang: HangFacts | None = None
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

    def facts(self) -> StressFacts:
        """The typed result the stress rules and the JSON report read."""
        watch = self.watchdog
        return StressFacts(
            threads=self.plan.threads,
            rounds_planned=self.plan.rounds,
            rounds_run=len(self.rounds),
            timeout_s=self.plan.timeout,
            seed=self.plan.seed,
            is_async=self.is_async,
            vendor=self.vendor,
            lock_analysis=self.lock_analysis,
            lock_wait_ms=self.plan.lock_wait_ms,
            rounds=tuple(r.facts() for r in self.rounds),
            deadlocks=deadlock_events(self.rounds, self.errors, self.registry, watch),
            lock_waits=tuple(watch.lock_waits(self.plan.lock_wait_ms)) if watch else (),
            graph=watch.worst_graph() if watch else None,
            samples=watch.samples if watch else 0,
            hang=self.hang,
            units=tuple(ThreadRoundUnit(*unit) for unit in self.units()),
        )

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
        watchdog = Watchdog(params, self.registry, self.site_of, self.plan.show_params,
                            vendor=conn.vendor)
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
                    current.db_errors.append(DbError(
                        thread=index,
                        alias=alias,
                        sqlstate=state,
                        at_ms=round((time.perf_counter() - self._round_started) * 1000, 1),
                        site=self.site_of(sys._getframe(1)),
                        sql=self.watchdog.show_sql(sql) if self.watchdog else None,
                        detail=parse_deadlock_detail(exc) if state == DEADLOCK else None,
                    ))
                raise

        return dbguard_stress_observer

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
            self.hang = handle_hang(
                result, threads, done, started, timeout=plan.timeout, registry=self.registry,
                watchdog=self.watchdog, lock_analysis=self.lock_analysis,
                wrappers=self._wrappers, display_path=self.display_path, own_files=_OWN_FILES)
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
            with self.thread_round(index, result.index):
                if self.is_async:
                    # async_to_sync gives this thread an event loop of its own, and sends the
                    # body's thread-sensitive ORM calls (sync_to_async) back to this thread:
                    # they use this thread's connections, which are closed below.
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

    def _site_of_traceback(self, tb: TracebackType | None) -> str | None:
        # The traceback's own frames, not f_back: frames that finished unwinding lose f_back.
        site = None
        while tb is not None:
            found = self.site_of_frame(tb.tb_frame)
            if found is not None:
                site = found
            tb = tb.tb_next
        return site


# the runner's frames say nothing about where a stuck thread waits
_OWN_FILES = (__file__.rstrip("c"),)

