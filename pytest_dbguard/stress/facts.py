"""The stress run's facts, typed: what the stress rules read and the JSON report shows.

Frozen, plain values only, like pytest_dbguard/facts.py: a record stays safe to keep after the
test. `to_dict()` gives the JSON report's `stress` object, whose schema these types keep. The
wait-for graph, its sides and the lock waits are the watchdog's sample dicts, kept as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The name the facts are kept under in TestRecord.facts.
STRESS = "stress"


@dataclass(frozen=True, slots=True)
class ThreadFailure:
    """What one stressed thread raised in one round."""

    thread: int
    round: int
    at_ms: float
    type: str
    message: str
    sqlstate: str | None
    site: str | None
    # raised after the round's timeout, when dbguard cancelled the thread's statement
    after_hang: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"thread": self.thread, "round": self.round, "at_ms": round(self.at_ms, 1),
                "type": self.type, "message": self.message, "sqlstate": self.sqlstate,
                "site": self.site, "after_hang": self.after_hang}


@dataclass(frozen=True, slots=True)
class DbError:
    """A database error a thread met, caught by its code or not (deadlock, nowait, cancel)."""

    thread: int
    alias: str
    sqlstate: str
    at_ms: float
    site: str | None
    sql: str | None
    detail: dict[str, Any] | None = None  # PostgreSQL's deadlock detail, parsed

    def to_dict(self) -> dict[str, Any]:
        return {"thread": self.thread, "alias": self.alias, "sqlstate": self.sqlstate,
                "at_ms": self.at_ms, "site": self.site, "sql": self.sql, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class RoundFacts:
    round: int
    duration_ms: float
    errors: tuple[ThreadFailure, ...] = ()
    db_errors: tuple[DbError, ...] = ()
    hung: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "duration_ms": round(self.duration_ms, 1),
                "errors": [e.to_dict() for e in self.errors],
                "db_errors": [e.to_dict() for e in self.db_errors], "hung": self.hung}


@dataclass(frozen=True, slots=True)
class DeadlockEvent:
    """One 40P01 a thread met, with the cycle's sides and whether it reached the test."""

    round: int
    thread: int
    at_ms: float
    site: str | None
    sql: str | None
    detail: dict[str, Any]
    victim_pid: int | None
    propagated: bool
    sides: tuple[dict[str, Any], ...]
    seen_by_watchdog: bool
    seen_after_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "thread": self.thread, "at_ms": self.at_ms,
                "site": self.site, "sql": self.sql, "detail": self.detail,
                "victim_pid": self.victim_pid, "propagated": self.propagated,
                "sides": list(self.sides), "seen_by_watchdog": self.seen_by_watchdog,
                "seen_after_ms": self.seen_after_ms}


@dataclass(frozen=True, slots=True)
class HangFacts:
    """A round that did not finish in time, and what dbguard did about it."""

    round: int
    timeout_s: float
    stuck_threads: tuple[int, ...]
    stacks: dict[str, list[str]]  # thread index (as text) -> its stack, outermost first
    graph: dict[str, Any] | None
    cancelled_pids: tuple[int, ...]
    terminated_pids: tuple[int, ...]
    abandoned_threads: tuple[int, ...]
    ended_after_ms: float
    lock_analysis: str

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "timeout_s": self.timeout_s,
                "stuck_threads": list(self.stuck_threads), "stacks": self.stacks,
                "graph": self.graph, "cancelled_pids": list(self.cancelled_pids),
                "terminated_pids": list(self.terminated_pids),
                "abandoned_threads": list(self.abandoned_threads),
                "ended_after_ms": self.ended_after_ms, "lock_analysis": self.lock_analysis}


@dataclass(frozen=True, slots=True)
class ThreadRoundUnit:
    """A unit of work of the call phase and the thread-round (one run of the body) it is in."""

    unit: int
    thread: int
    round: int


@dataclass(frozen=True, slots=True)
class StressFacts:
    threads: int
    rounds_planned: int
    rounds_run: int
    timeout_s: float
    seed: int
    is_async: bool
    vendor: str | None
    lock_analysis: str
    lock_wait_ms: int
    rounds: tuple[RoundFacts, ...] = ()
    deadlocks: tuple[DeadlockEvent, ...] = ()
    lock_waits: tuple[dict[str, Any], ...] = ()
    graph: dict[str, Any] | None = None
    samples: int = 0
    hang: HangFacts | None = None
    # the rule side only (not in the JSON report): which unit belongs to which thread-round
    units: tuple[ThreadRoundUnit, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "threads": self.threads,
            "rounds_planned": self.rounds_planned,
            "rounds_run": self.rounds_run,
            "timeout_s": self.timeout_s,
            "seed": self.seed,
            "async": self.is_async,
            "vendor": self.vendor,
            "lock_analysis": self.lock_analysis,
            "lock_wait_ms": self.lock_wait_ms,
            "rounds": [r.to_dict() for r in self.rounds],
            "deadlocks": [d.to_dict() for d in self.deadlocks],
            "lock_waits": list(self.lock_waits),
            "graph": self.graph,
            "samples": self.samples,
            "hang": self.hang.to_dict() if self.hang is not None else None,
        }
