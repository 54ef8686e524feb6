"""The deadlocks of a stress run: every 40P01 a thread met, with both sides of its cycle."""

from __future__ import annotations

from typing import Any

from ..backends.postgresql import DEADLOCK, sqlstate_of
from .facts import DeadlockEvent
from .rounds import RoundResult, ThreadError
from .watchdog import BackendRegistry, Watchdog


def deadlock_events(rounds: list[RoundResult], errors: list[ThreadError],
                    registry: BackendRegistry, watchdog: Watchdog | None
                    ) -> tuple[DeadlockEvent, ...]:
    """Every 40P01 a thread met, with the cycle the watchdog saw and whether it propagated."""
    propagated = {(e.round, e.index) for e in errors if sqlstate_of(e.exc) == DEADLOCK}
    out = []
    for result in rounds:
        for db_error in result.db_errors:
            if db_error.sqlstate != DEADLOCK:
                continue
            victim_pid = None
            detail = db_error.detail or {}
            for backend in registry.of_round(result.index):
                if backend.thread == db_error.thread and backend.alias == db_error.alias:
                    victim_pid = backend.pid
            cycle = (watchdog.cycle_for(result.index, victim_pid, detail.get("pids", ()))
                     if watchdog else None)
            if cycle is not None:
                for side in cycle["sides"]:
                    if side["site"] is None and side["thread"] == db_error.thread:
                        side["site"] = db_error.site  # the victim's aborted statement
            key = (result.index, db_error.thread)
            out.append(DeadlockEvent(
                round=result.index,
                thread=db_error.thread,
                at_ms=db_error.at_ms,
                site=db_error.site,
                sql=db_error.sql,
                detail=detail,
                victim_pid=victim_pid,
                propagated=key in propagated,
                sides=tuple(cycle["sides"] if cycle else sides_from_detail(detail, registry)),
                seen_by_watchdog=cycle is not None,
                seen_after_ms=cycle["seen_after_ms"] if cycle else None,
            ))
            propagated.discard(key)
    return tuple(out)


def sides_from_detail(detail: dict[str, Any], registry: BackendRegistry
                      ) -> list[dict[str, Any]]:
    """Without a watchdog sample of the cycle: what PG's error detail alone tells."""
    sides = []
    for wait in detail.get("waits", ()):
        backend = registry.get(wait["pid"])
        sides.append({
            "pid": wait["pid"],
            "thread": backend.thread if backend else None,
            "sql": None,
            "site": None,
            "waits_for": {"mode": wait["mode"], "object": wait["object"],
                          "relation": detail.get("relation"), "row": None},
            "blocked_by": [wait["blocker"]],
        })
    return sides
