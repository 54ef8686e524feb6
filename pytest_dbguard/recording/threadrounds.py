"""Units of work under stress: each thread's run of the test body in each round is its own.

A stressed body runs threads x rounds times in one call phase. Every such run (a thread-round)
gets a unit of work of its own, and the units it opens inside (top-level calls of the test
body, requests through the test client) belong to it, so the rules that group queries by unit
judge one run of the body at a time. The runner enters a thread-round after the barrier and
leaves it before closing the thread's connections: connecting, waiting and closing, like every
query outside the body, belong to no thread-round.

A context variable holds the current thread-round: asgiref carries it into an async body's
event loop and back into the ORM calls that body makes through sync_to_async.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import CodeType, FrameType

from .bodysteps import BodySteps
from .recorder import Hub


@dataclass
class _ThreadRound:
    thread: int
    round: int
    steps: BodySteps | None
    unit: int
    request: int = 0  # the unit of the request the body is in, 0 outside one


_CURRENT: contextvars.ContextVar[_ThreadRound | None] = contextvars.ContextVar(
    "dbguard_thread_round", default=None)


class ThreadRounds:
    """Set as the hub's `body` and `thread_units` while a stressed body runs."""

    def __init__(self, hub: Hub, code: CodeType | None) -> None:
        self.hub = hub
        self.code = code  # None: each thread-round is one unit (top-level calls not split)
        # unit -> (thread, round); written from the stressed threads, one key each
        self.owners: dict[int, tuple[int, int]] = {}

    @contextmanager
    def thread_round(self, thread: int, round_index: int) -> Iterator[None]:
        """The block is one run of the body by `thread` in round `round_index`."""
        steps = BodySteps(self.hub, self.code) if self.code is not None else None
        unit = steps.unit if steps is not None else self.hub.new_unit()
        self.owners[unit] = (thread, round_index)
        token = _CURRENT.set(_ThreadRound(thread, round_index, steps, unit))
        try:
            yield
        finally:
            _CURRENT.reset(token)
            if steps is not None:
                steps.close()

    def unit_for(self, user: FrameType | None, innermost: FrameType | None,
                 context: int = 1) -> int:
        """The unit of a query (the tap asks): 0 outside every thread-round."""
        current = _CURRENT.get()
        if current is None:
            return 0
        if current.request:
            return current.request
        if current.steps is None:
            return current.unit
        unit = current.steps.unit_for(user, innermost, context)
        if unit not in self.owners:
            self.owners[unit] = (current.thread, current.round)
        return unit

    def begin_request(self, unit: int) -> None:
        current = _CURRENT.get()
        if current is not None:
            current.request = unit
            self.owners[unit] = (current.thread, current.round)

    def end_request(self) -> None:
        current = _CURRENT.get()
        if current is not None:
            current.request = 0

    def units(self) -> tuple[tuple[int, int, int], ...]:
        """(unit, thread, round) of every unit a thread-round opened, by unit."""
        # a copy first: a thread a hang left behind may still open units
        owners = dict(self.owners)
        return tuple((unit, thread, rnd) for unit, (thread, rnd) in sorted(owners.items()))


@contextmanager
def stressed_body(hub: Hub, code: CodeType | None) -> Iterator[ThreadRounds]:
    """Thread-round units while the block runs the stressed body."""
    rounds = ThreadRounds(hub, code)
    previous = hub.body, hub.thread_units
    hub.body = hub.thread_units = rounds
    try:
        yield rounds
    finally:
        hub.body, hub.thread_units = previous
