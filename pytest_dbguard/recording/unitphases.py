"""unittest set-up and teardown that pytest runs inside its call phase, charged to their phase.

pytest runs a TestCase's setUp, the test method and tearDown as one call; Django adds its own
fixture loading and flushing around them. Queries there are set-up and teardown, like those of
pytest fixtures, never the body's (budgets, N+1 rules, slow queries).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .recorder import TestRecorder

# unittest.TestCase / IsolatedAsyncioTestCase and Django's SimpleTestCase hooks, by phase
SETUP_METHODS = ("_pre_setup", "_callSetUp")
TEARDOWN_METHODS = ("_callTearDown", "doCleanups", "_post_teardown")


def _charged(method: Callable[..., Any], recorder: TestRecorder, phase: str
             ) -> Callable[..., Any]:
    def charged(*args: Any, **kwargs: Any) -> Any:
        with recorder.charged_to(phase):
            return method(*args, **kwargs)

    return charged


def charge_unittest_phases(instance: Any, recorder: TestRecorder) -> None:
    """Wrap the hooks on this one test case instance (pytest makes one per test)."""
    if instance is None:
        return
    for names, phase in ((SETUP_METHODS, "setup"), (TEARDOWN_METHODS, "teardown")):
        for name in names:
            method = getattr(instance, name, None)
            if callable(method):
                setattr(instance, name, _charged(method, recorder, phase))
