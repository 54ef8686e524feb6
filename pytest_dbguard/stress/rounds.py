"""What a stress round collects while its threads run, frozen into facts when the test ends."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..backends.postgresql import sqlstate_of
from ..text import first_line
from .facts import DbError, RoundFacts, ThreadFailure


@dataclass
class ThreadError:
    """An exception a stressed thread raised (kept for the failure's traceback)."""

    index: int
    round: int
    at_ms: float
    exc: BaseException
    site: str | None
    # raised after the round's timeout, when dbguard cancelled the thread's statement
    after_hang: bool = False

    def failure(self) -> ThreadFailure:
        return ThreadFailure(thread=self.index, round=self.round, at_ms=self.at_ms,
                             type=type(self.exc).__name__, message=first_line(self.exc),
                             sqlstate=sqlstate_of(self.exc), site=self.site,
                             after_hang=self.after_hang)


@dataclass
class RoundResult:
    index: int
    duration_ms: float = 0.0
    errors: list[ThreadError] = field(default_factory=list)
    # database errors the threads met, caught or not (deadlock, nowait, cancel)
    db_errors: list[DbError] = field(default_factory=list)
    hung: bool = False

    def facts(self) -> RoundFacts:
        return RoundFacts(round=self.index, duration_ms=self.duration_ms,
                          errors=tuple(e.failure() for e in self.errors),
                          db_errors=tuple(self.db_errors), hung=self.hung)
