"""Units of work for the test body: each call the test function makes is a unit of its own.

A test that calls a service three times, or loops over items calling it, is the loop; the
service is not. The repeated-query rules group rows by unit, so giving each top-level call of
the test function its own unit keeps such repetition out of them, as a request through the
test client already is.
"""

from __future__ import annotations

import inspect
from types import CodeType, FrameType, TracebackType
from typing import Any

from .recorder import Hub

# How far out from the user frame a query's walk looks for the test function's frame.
WALK_LIMIT = 40


class BodySteps:
    """Follows which top-level call of the test function a query runs under."""

    def __init__(self, hub: Hub, code: CodeType) -> None:
        self.hub = hub
        self.code = code
        self.frame: FrameType | None = None
        # the frame the test function called, held so that its identity cannot be reused by
        # the next call (which would merge two calls into one unit)
        self.child: Any = None
        self.unit = hub.new_unit()

    def unit_for(self, user: FrameType | None, innermost: FrameType | None,
                 context: int = 1) -> int:
        """The unit of a query whose first user frame is `user` (test thread or not).

        When the test function itself is the first user frame (it called Django or a library
        directly), the walk starts from the innermost frame to find which call it made; only
        for queries with an ORM context (`context`, a lazy load), the ones a rule groups.
        """
        body = self.frame
        if body is None:
            body = self._find_body(user)
            if body is None:
                return self.unit  # another thread, or too deep: keep the current unit
            self.frame = body
        # a comprehension or lambda of the test body is the test body's own code
        direct = user is body or (user is not None and user.f_back is body
                                  and user.f_code.co_name.startswith("<"))
        if direct and not context:
            # the test's own plain query: the repeated-query rules leave test code alone, so
            # its unit does not matter and the deeper walk is not worth its cost
            return self.unit
        frame, target = (innermost, user) if direct else (user, body)
        child = None
        depth = 0
        limit = WALK_LIMIT * 4 if direct else WALK_LIMIT
        while frame is not None and frame is not target and depth < limit:
            child = frame
            frame = frame.f_back
            depth += 1
        if frame is not target:
            return self.unit
        if child is not None and child.f_code.co_name.startswith("__"):
            # reached without a call written in the test: an attribute (a lazy relation),
            # iterating or len() of a queryset; a loop doing that in the test body is still
            # one unit, as the N+1 it is
            return self.unit
        if child is None or child is not self.child:
            self.child = child
            self.unit = self.hub.new_unit()
        return self.unit

    def _find_body(self, frame: FrameType | None) -> FrameType | None:
        code = self.code
        depth = 0
        while frame is not None and frame.f_code is not code and depth < WALK_LIMIT:
            frame = frame.f_back
            depth += 1
        return frame if frame is not None and frame.f_code is code else None

    def close(self) -> None:
        self.frame = self.child = None

    def __enter__(self) -> None:
        self.hub.body = self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.hub.body = None
        self.close()


# id(function) -> (function, its test body's code): parametrized tests share one function, so
# each is unwrapped once per session; the function is held so that its id is never reused
_codes: dict[int, tuple[Any, CodeType | None]] = {}


def test_code(obj: Any) -> CodeType | None:
    """The code object that runs as the test body (under decorators that kept __wrapped__)."""
    # a method's attributes (__wrapped__ too) are its function's: the function is the key, so
    # that the bound methods of a test class, one per test, share one entry
    key = getattr(obj, "__func__", obj)
    found = _codes.get(id(key))
    if found is not None and found[0] is key:
        return found[1]
    try:
        func = inspect.unwrap(obj)
    except (ValueError, TypeError):
        return None
    func = getattr(func, "__func__", func)
    code = getattr(func, "__code__", None)
    result = code if isinstance(code, CodeType) else None
    _codes[id(key)] = (key, result)
    return result
