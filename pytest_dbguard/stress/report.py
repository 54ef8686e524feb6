"""What the stress runner needs from a test and tells back: body, run, call sites, failures."""

from __future__ import annotations

import inspect
import os
import traceback
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..recording.callsite import THIRD_PARTY, USER, FrameClassifier

if TYPE_CHECKING:
    import pytest

    from ..recording.recorder import Hub
    from . import StressPlan
    from .runner import StressRunner

# Thread failures listed one per line before the first one's traceback.
FAILURES_LISTED = 12


def test_arguments(obj: Callable[..., Any], funcargs: dict[str, Any]
                   ) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The test function to run in each thread, and its fixture values.

    pytest-asyncio replaces an async test by a wrapper that runs it on the test's own loop;
    stress mode runs the coroutine function itself, on one event loop per thread.
    """
    func = obj
    if not inspect.iscoroutinefunction(func):
        try:
            unwrapped = inspect.unwrap(func, stop=inspect.iscoroutinefunction)
        except ValueError:
            unwrapped = func
        if inspect.iscoroutinefunction(unwrapped):
            func = unwrapped
    try:
        names = list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        names = []
    return func, {name: funcargs[name] for name in names if name in funcargs}


def run_stressed(plan: StressPlan, item: pytest.Function, hub: Hub,
                 body_code: Callable[[Any], Any], transactional: bool,
                 facts: dict[str, Any]) -> StressRunner:
    """Run the test's body under stress; its facts land in `facts` even if the run fails.

    Each thread's run of the body in each round is a unit of work of its own, split into its
    top-level calls when a rule groups by them (as an unstressed body is).
    """
    from ..recording.threadrounds import stressed_body
    from .facts import STRESS
    from .runner import StressRunner

    func, kwargs = test_arguments(item.obj, item.funcargs)
    with stressed_body(hub, body_code(func)) as thread_rounds:
        runner = StressRunner(plan, func, kwargs, item.nodeid, make_site_of(hub.classifier),
                              transactional=transactional,
                              display_path=hub.classifier.display_path,
                              site_of_frame=make_user_site_of(hub.classifier),
                              thread_round=thread_rounds.thread_round,
                              units=thread_rounds.units)
        try:
            runner.run()
        finally:
            facts[STRESS] = runner.facts()
    return runner


def make_site_of(classifier: FrameClassifier) -> Callable[[FrameType | None], str | None]:
    """path:line of the first user frame from `frame` outwards (read-only: safe from any thread)."""

    def site_of(frame: FrameType | None) -> str | None:
        fallback = None
        while frame is not None:
            kind = classifier.kinds.get(id(frame.f_code))
            if kind is None:
                kind = classifier.classify(frame.f_code)
            if kind == USER:
                return f"{classifier.display_path(frame.f_code.co_filename)}:{frame.f_lineno}"
            if fallback is None and kind == THIRD_PARTY:  # better than no site at all
                fallback = frame
            frame = frame.f_back
        if fallback is not None:
            return f"{classifier.display_path(fallback.f_code.co_filename)}:{fallback.f_lineno}"
        return None

    return site_of


def make_user_site_of(classifier: FrameClassifier) -> Callable[[FrameType | None], str | None]:
    """path:line of `frame` itself when it is user code, else None."""

    def user_site_of(frame: FrameType | None) -> str | None:
        if frame is None:
            return None
        kind = classifier.kinds.get(id(frame.f_code))
        if kind is None:
            kind = classifier.classify(frame.f_code)
        if kind != USER:
            return None
        return f"{classifier.display_path(frame.f_code.co_filename)}:{frame.f_lineno}"

    return user_site_of


def failure_report(runner: StressRunner) -> str:
    """The failure text of a stressed test: which thread failed in which round, and why."""
    from .runner import __file__ as runner_file

    plan = runner.plan
    errors = runner.errors
    runs = sum(1 for _ in runner.rounds) * plan.threads
    lines = [
        f"stress: {len(errors)} of {runs} thread runs failed ({plan.threads} threads x "
        f"{len(runner.rounds)} rounds, seed {plan.seed})"
    ]
    for error in errors[:FAILURES_LISTED]:
        site = f"  at {error.site}" if error.site else ""
        text = error.failure()
        lines.append(f"  round {error.round}, thread {error.index}: {text.type}: "
                     f"{text.message}{site}")
    if len(errors) > FAILURES_LISTED:
        lines.append(f"  ... {len(errors) - FAILURES_LISTED} more")
    first = errors[0]
    # the plugin's own frames (runner, query tap) say nothing about the user's failure
    own = os.path.dirname(os.path.dirname(os.path.abspath(runner_file))) + os.sep
    exc_info = traceback.TracebackException.from_exception(first.exc)
    exc_info.stack = traceback.StackSummary.from_list(
        [frame for frame in exc_info.stack if not frame.filename.startswith(own)])
    lines.append("")
    lines.append(f"thread {first.index} (round {first.round}) traceback:")
    # Django re-raises the driver's error: one traceback of the exception the test saw is enough
    lines.extend(line.rstrip("\n") for line in exc_info.format(chain=False))
    return "\n".join(lines)
