"""A lower bound for bench_suite.py --floor: what dbguard's default rules must observe, in the
least Python, with none of dbguard's code.

Not a product and not a test of dbguard: a throwaway measuring stick. Loaded with
`-p floor_plugin` in the benchmark's project, it watches what the default rules read and
judges the crudest form of three of them, so that its cost is what any plugin doing this job
in Python pays at least:

- every query: its duration, its SQL text as a shape (a dict lookup), a walk out to the first
  frame outside site-packages and the standard library (the call site), whether it ran inside
  an atomic block, on a running event loop, or raised;
- every phase end: each initialised Django connection of the test thread (open, in an atomic
  block, marked for rollback), through the same `connections.all()` dbguard reads;
- `QuerySet._fetch_all` (eager loads) and `Atomic.__exit__` (exceptions leaving a block);
- judging: a repeated (shape, call site) count, the flags, and the set-up/call transaction
  states compared; one small dict per test kept to the end of the run, as a report needs.

What it leaves out, and dbguard does: SQL fingerprints (sqlparse, once per new statement),
ORM contexts (which relation loaded), units of work (test-client requests, the test body's
calls), load groups, commit and rollback tracking, raw psycopg and pool connections, the
PostgreSQL census, twenty-one rules with their messages, markers, budgets, the baseline,
report entries, xdist and start-up (importing and registering the rules).
"""

from __future__ import annotations

import sys
import time
from asyncio import _get_running_loop
from collections.abc import Generator
from typing import Any

import pytest

_perf = time.perf_counter
_getframe = sys._getframe
STATE = pytest.StashKey[dict[str, Any]]()
RUN: dict[str, Any] = {"rows": None, "eager": None, "exits": None}
ENTRIES: dict[str, dict[str, Any]] = {}
OUTCOMES: dict[str, str] = {}
_KINDS: dict[int, int] = {}  # id(code) -> 0 for the project's code, 1 for anything else
_SHAPES: dict[str, int] = {}
_SITES: dict[tuple[int, int], int] = {}
REPEATS = 5  # the nplusone default threshold


def _kind(code: Any) -> int:
    name = code.co_filename
    kind = 1 if ("/site-packages/" in name or "/lib/python3" in name or "<" in name) else 0
    _KINDS[id(code)] = kind
    return kind


def _tap(execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    rows = RUN["rows"]
    if rows is None:
        return execute(sql, params, many, context)
    start = _perf()
    failed = False
    try:
        return execute(sql, params, many, context)
    except BaseException:
        failed = True
        raise
    finally:
        duration = _perf() - start
        shape = _SHAPES.get(sql)
        if shape is None:
            shape = _SHAPES[sql] = len(_SHAPES)
        frame: Any = _getframe(2)
        while frame is not None:
            kind = _KINDS.get(id(frame.f_code))
            if kind is None:
                kind = _kind(frame.f_code)
            if kind == 0:
                break
            frame = frame.f_back
        site = -1
        if frame is not None:
            key = (id(frame.f_code), frame.f_lasti)
            site = _SITES.get(key, -1)
            if site < 0:
                site = _SITES[key] = len(_SITES)
        del frame
        flags = 1 if context["connection"].in_atomic_block else 0
        if _get_running_loop() is not None:
            flags |= 2
        if failed:
            flags |= 4
        rows.append((shape, site, flags, duration, many))


def _tap_connection(sender: Any, connection: Any, **kwargs: Any) -> None:
    if _tap not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, _tap)


def pytest_configure(config: pytest.Config) -> None:
    from django.db import transaction
    from django.db.backends.signals import connection_created
    from django.db.models import query

    connection_created.connect(_tap_connection, weak=False)
    fetch_all = query.QuerySet._fetch_all

    def _fetch_all(self: Any) -> None:
        if (RUN["rows"] is not None and self._result_cache is None
                and (self._prefetch_related_lookups or self.query.select_related)):
            RUN["eager"].append((id(self), self.query.select_related))
        fetch_all(self)

    query.QuerySet._fetch_all = _fetch_all  # type: ignore[method-assign]
    atomic_exit = transaction.Atomic.__exit__

    def __exit__(self: Any, exc_type: Any, exc_value: Any, tb: Any) -> Any:
        if exc_value is not None and RUN["rows"] is not None:
            RUN["exits"].append(id(exc_value))
        return atomic_exit(self, exc_type, exc_value, tb)

    transaction.Atomic.__exit__ = __exit__  # type: ignore[method-assign]


def _begin(item: pytest.Item, phase: str) -> dict[str, Any]:
    state = item.stash[STATE]
    RUN["rows"] = state["phases"].setdefault(phase, [])
    RUN["eager"], RUN["exits"] = state["eager"], state["exits"]
    return state


def _end(state: dict[str, Any], phase: str) -> None:
    from django.db import connections

    RUN["rows"] = None
    state["tx"][phase] = [(c.alias, c.connection is not None, c.in_atomic_block,
                           c.needs_rollback) for c in connections.all(initialized_only=True)]


def _judge(state: dict[str, Any]) -> list[str]:
    found = []
    rows = state["phases"].get("call", ())
    if len(rows) >= REPEATS:
        counts: dict[tuple[int, int], int] = {}
        for row in rows:
            key = (row[0], row[1])
            counts[key] = counts.get(key, 0) + 1
        if max(counts.values()) >= REPEATS:
            found.append("nplusone")
    found.extend("flag" for row in rows if row[2] & 6)
    tx = state["tx"]
    if "call" in tx and "setup" in tx and tx["call"] != tx["setup"]:
        found.append("open-transaction")
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    item.stash[STATE] = {"phases": {}, "eager": [], "exits": [], "tx": {}, "start": _perf(),
                         "markers": {mark.name for mark in item.iter_markers()}}
    state = _begin(item, "setup")
    try:
        return (yield)
    finally:
        _end(state, "setup")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    state = _begin(item, "call")
    try:
        return (yield)
    finally:
        _end(state, "call")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None
                            ) -> Generator[None, Any, Any]:
    state = _begin(item, "teardown")
    try:
        return (yield)
    finally:
        _end(state, "teardown")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    state = item.stash.get(STATE, None)
    found = _judge(state) if state is not None and call.when != "setup" else []
    report: pytest.TestReport = yield
    if call.when == "teardown" and state is not None:
        ENTRIES[item.nodeid] = {
            "queries": {phase: len(rows) for phase, rows in state["phases"].items()},
            "duration": _perf() - state["start"], "findings": found}
        del item.stash[STATE]
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    OUTCOMES[report.nodeid] = report.outcome
