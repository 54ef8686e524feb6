"""A pytest plugin for bench_suite.py: times dbguard's internal steps, or measures its memory.

Loaded with `-p bench_profile` in the benchmark's profiled runs only, so the timed runs carry
none of it. DBGUARD_PROFILE=path wraps dbguard's per-test steps in perf_counter spans (self time:
a step's nested steps are not counted twice) and writes seconds per step to `path` as JSON.
DBGUARD_MEMORY=path writes to `path` the bytes that dbguard's own records hold when the session
ends: everything reachable from the DbguardSession and from the per-test state pytest's items
keep, walking containers and pytest_dbguard objects only (not Django's or pytest's objects).
A walk rather than tracemalloc: tracing every allocation slows a 10,000-test run twenty-fold.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections import Counter
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
    if path:
        from pytest_dbguard.plugin import SESSION, TEST_STATE

        roots: list[Any] = [config.stash.get(SESSION, None)]
        session = getattr(config, "_dbguard_items", None) or []
        roots.extend(item.stash.get(TEST_STATE, None) for item in session)
        total, by_type = retained(roots)
        top = [f"{size / 1e6:6.2f} MB  {name}" for name, size in by_type.most_common(6)]
        with open(path, "w") as out:
            json.dump({"bytes": total, "tests": _tests, "top": top}, out)


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config._dbguard_items = list(session.items)  # type: ignore[attr-defined]


_LEAVES = (str, bytes, int, float, bool, type(None), complex)
_CONTAINERS = (dict, list, tuple, set, frozenset)


def retained(roots: list[Any]) -> tuple[int, Counter[str]]:
    """Bytes reachable from `roots` through containers and pytest_dbguard objects."""
    seen: set[int] = set()
    by_type: Counter[str] = Counter()
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or obj is None:
            continue
        cls = type(obj)
        ours = cls.__module__.startswith("pytest_dbguard")
        if not (ours or isinstance(obj, _LEAVES + _CONTAINERS)) or isinstance(obj, type):
            continue
        seen.add(id(obj))
        by_type[f"{cls.__module__}.{cls.__qualname__}"] += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, _CONTAINERS):
            stack.extend(obj)
        elif ours:
            if hasattr(obj, "__dict__"):
                by_type[f"{cls.__module__}.{cls.__qualname__}"] += sys.getsizeof(obj.__dict__)
                stack.extend(obj.__dict__.values())
            for klass in cls.__mro__:
                for slot in getattr(klass, "__slots__", ()):
                    stack.append(getattr(obj, slot, None))
    return sum(by_type.values()), by_type
