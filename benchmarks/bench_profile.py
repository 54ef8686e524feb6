"""A pytest plugin for bench_suite.py: times dbguard's internal steps, or measures its memory.

Loaded with `-p bench_profile` in the benchmark's profiled runs only, so the timed runs carry
none of it. DBGUARD_PROFILE=path wraps dbguard's per-test steps in perf_counter spans (self time:
a step's nested steps are not counted twice) and writes seconds per step to `path` as JSON.
DBGUARD_MEMORY=path traces allocations and writes what pytest_dbguard frames allocated that is
still alive when the session ends (dbguard's own records) to `path`.
"""

from __future__ import annotations

import functools
import json
import os
import time
import tracemalloc
from typing import Any

import pytest

# step name -> (module, object, attribute); wrapped when present (modules move between releases)
STEPS = [
    ("start", "pytest_dbguard.session", "DbguardSession", "begin_test"),
    ("phase switch", "pytest_dbguard.recording.recorder", "TestRecorder", "start_phase"),
    ("phase switch", "pytest_dbguard.recording.recorder", "TestRecorder", "stop_phase"),
    ("probes", "pytest_dbguard.recording.txstate", "LifecycleProbe", "end_phase"),
    ("probes", "pytest_dbguard.recording.psycopg", "PsycopgProbe", "end_phase"),
    ("census", "pytest_dbguard.recording.census", "CensusProbe", "end_phase"),
    ("aggregation", "pytest_dbguard.recording.recorder", None, "build_phase"),
    ("aggregation", "pytest_dbguard.recording.recorder", "TestRecorder", "record"),
    ("rules", "pytest_dbguard.session", "DbguardSession", "judge"),
    ("report entry", "pytest_dbguard.session", "DbguardSession", "finish_test"),
    ("report entry", "pytest_dbguard.session", "DbguardSession", "collect_report"),
    ("end-of-run reports", "pytest_dbguard.session", "DbguardSession", "terminal_lines"),
    ("end-of-run reports", "pytest_dbguard.session", "DbguardSession", "write_reports"),
]

_totals: dict[str, float] = {}
_stack: list[float] = []  # time spent in nested steps, one slot per open step
_tests = 0


def _timed(step: str, func: Any) -> Any:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _stack.append(0.0)
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            nested = _stack.pop()
            _totals[step] = _totals.get(step, 0.0) + elapsed - nested
            if _stack:
                _stack[-1] += elapsed
    return wrapper


def _install() -> None:
    import importlib

    for step, module_name, owner_name, attribute in STEPS:
        module = importlib.import_module(module_name)
        owner = getattr(module, owner_name) if owner_name else module
        func = getattr(owner, attribute, None)
        if func is not None:
            setattr(owner, attribute, _timed(step, func))
            _totals.setdefault(step, 0.0)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("DBGUARD_MEMORY"):
        tracemalloc.start(6)


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("DBGUARD_PROFILE"):
        _install()


def pytest_runtest_logfinish() -> None:
    global _tests
    _tests += 1


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    path = os.environ.get("DBGUARD_PROFILE")
    if path:
        with open(path, "w") as out:
            json.dump(dict(_totals, tests=_tests), out)
    path = os.environ.get("DBGUARD_MEMORY")
    if path and tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, "*pytest_dbguard*", all_frames=True)])
        tracemalloc.stop()
        stats = snapshot.statistics("lineno")
        top = [f"{s.size / 1e6:6.2f} MB  {s.count:7d} blocks  {s.traceback[0]}"
               for s in stats[:6]]
        with open(path, "w") as out:
            json.dump({"bytes": sum(s.size for s in stats), "tests": _tests, "top": top}, out)
