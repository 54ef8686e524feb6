"""The stress rules: `deadlock`, `lock-wait` and `stress-hang`, read from the stress run's facts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..events import Finding, TestRecord
from ..facts import CALL_ERROR, CallError
from ..stress.facts import STRESS, DeadlockEvent, StressFacts
from .lockwait import DEFAULT_LOCK_WAIT_MS, lock_waits_outside_stress
from .registry import PROBE_LOCKS, PROBE_PSYCOPG, STRESS_ON, RuleOption, TestContext, rule

DEADLOCK = "40P01"
# Innermost frames of each stuck thread's stack shown in a hang message (JSON has them all).
STACK_FRAMES_SHOWN = 10
GRAPH_EDGES_SHOWN = 12

DEADLOCK_HINT = (
    "take row locks in one order everywhere (for example lock the rows sorted by primary key: "
    "select_for_update().filter(pk__in=ids).order_by(\"pk\") before changing them), or retry "
    "the whole transaction when it fails with OperationalError 40P01"
)
RETRIED_HINT = (
    "the retry works, but every deadlock stalls both transactions for deadlock_timeout: "
    "take the row locks in one order (sorted by primary key) so there is nothing to retry"
)
LOCK_WAIT_HINT = (
    "keep transactions that hold row locks short (no slow work, sleeps or network calls between "
    "the first write or select_for_update and the commit); where waiting is not needed use "
    "select_for_update(skip_locked=True) or nowait=True"
)
HANG_HINT = (
    "a thread waits for something another thread holds and nothing times out: a Python lock "
    "held across a database lock, a connection pool smaller than the number of threads, or a "
    "wait without a timeout. Acquire locks in one order and set timeouts (lock_timeout, "
    "Lock.acquire(timeout=...), pool timeout)"
)


def who(thread: int | None, pid: int | None) -> str:
    name = ("the main test thread" if thread == -1 else f"thread {thread}"
            if thread is not None else "a backend outside the stressed threads")
    return f"{name} (pid {pid})" if pid is not None else name


def lock_text(waits_for: dict[str, Any] | None) -> str:
    if not waits_for:
        return "a lock"
    text = f"{waits_for.get('mode') or 'a lock'} on {waits_for.get('object') or '?'}"
    row, relation = waits_for.get("row"), waits_for.get("relation")
    if waits_for.get("locktype") == "tuple":
        return text  # the object already names the row and its relation
    if row and relation:
        text += f" (row {row} of {relation})"
    elif relation and relation not in text:
        text += f" ({relation})"
    return text


def _threads_of(sides: list[dict[str, Any]]) -> dict[int, int | None]:
    return {side["pid"]: side.get("thread") for side in sides if side.get("pid") is not None}


def side_lines(sides: list[dict[str, Any]]) -> list[str]:
    threads = _threads_of(sides)
    lines = []
    for side in sides:
        site = f" at {side['site']}" if side.get("site") else ""
        lines.append(f"{who(side.get('thread'), side.get('pid'))}{site}: "
                     f"{side.get('sql') or '(statement not sampled)'}")
        holders = ", ".join(who(threads.get(b), b) for b in side.get("blocked_by") or ())
        lines.append(f"    waits for {lock_text(side.get('waits_for'))}"
                     + (f", held by {holders}" if holders else ""))
    return lines


def _deadlock_signature(event: DeadlockEvent) -> tuple[Any, ...]:
    """The same statements at the same lines deadlocking, however many threads joined in."""
    shape = frozenset((s.get("site") or "", s.get("sql") or "") for s in event.sides)
    return (event.propagated, shape or frozenset({(event.site or "", event.sql or "")}))


def deadlock_findings(stress: StressFacts, nodeid: str) -> list[Finding]:
    groups: dict[tuple[Any, ...], list[DeadlockEvent]] = {}
    for event in stress.deadlocks:
        groups.setdefault(_deadlock_signature(event), []).append(event)
    rounds_run = stress.rounds_run
    findings = []
    for (propagated, _shape), events in groups.items():
        first = events[0]
        rounds = sorted({e.round for e in events})
        sides = list(first.sides)
        kind = "propagated to the test" if propagated else "caught and retried by the code"
        sizes = sorted({max(len(e.sides), 2) for e in events})
        between = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]} to {sizes[-1]}"
        message = (f"deadlock between {between} threads in {len(rounds)} of "
                   f"{rounds_run} rounds (PostgreSQL {DEADLOCK}, {kind})")
        lines = side_lines(sides)
        victim = who(first.thread, first.victim_pid)
        site = f" at {first.site}" if first.site else ""
        lines.append(f"PostgreSQL aborted {victim}{site} after {first.at_ms:.0f} ms "
                     f"(round {first.round})"
                     + (f"; the watchdog saw the cycle after {first.seen_after_ms:.0f} ms"
                        if first.seen_after_ms is not None else
                        "; the watchdog did not sample the cycle, sides are from PostgreSQL's "
                        "error detail"))
        detection = [e.at_ms for e in events]
        findings.append(Finding(
            rule="deadlock",
            nodeid=nodeid,
            phase="call",
            message=message,
            action="fail" if propagated else "warn",
            hint=DEADLOCK_HINT if propagated else RETRIED_HINT,
            evidence={
                "propagated": propagated,
                "rounds": rounds,
                "count": len(events),
                "sides": sides,
                "detail": first.detail,
                "detected_after_ms": {"min": min(detection), "max": max(detection)},
                "lines": lines,
            },
        ))
    return findings


def deadlocks_outside_stress(record: TestRecord) -> list[Finding]:
    """A deadlock between threads the test started itself: from the recorded 40P01 errors."""
    hits = [q for q in record.phase("call").failed_queries() if q.sqlstate == DEADLOCK]
    if not hits:
        return []
    call_error: CallError | None = record.facts.get(CALL_ERROR)
    propagated = call_error is not None and call_error.sqlstate == DEADLOCK
    sites = sorted({f"{q.call_site} ({q.thread})" for q in hits if q.call_site})
    kind = "propagated to the test" if propagated else "caught and retried by the code"
    return [Finding(
        rule="deadlock",
        nodeid=record.nodeid,
        phase="call",
        message=f"PostgreSQL reported {len(hits)} deadlock(s) ({DEADLOCK}, {kind})",
        action="fail" if propagated else "warn",
        hint=DEADLOCK_HINT if propagated else RETRIED_HINT,
        evidence={"propagated": propagated, "count": len(hits),
                  "lines": [f"aborted statement at {site}" for site in sites]
                  + ["run the test with --dbguard-stress and @pytest.mark.stress to see both "
                     "sides of the deadlock"]},
    )]


@rule("deadlock", "fail", "PostgreSQL reported a deadlock", stress=STRESS_ON)
def check_deadlock(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    stress: StressFacts | None = record.facts.get(STRESS)
    if stress is None:
        return deadlocks_outside_stress(record)
    return deadlock_findings(stress, record.nodeid)


@rule("lock-wait", "warn", "a query waited on a lock too long", stress=STRESS_ON,
      options=(RuleOption("lock_wait_ms", DEFAULT_LOCK_WAIT_MS, "--dbguard-lock-wait-ms"),),
      probes=frozenset({PROBE_LOCKS, PROBE_PSYCOPG}))
def check_lock_wait(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    stress: StressFacts | None = record.facts.get(STRESS)
    if stress is None:
        return lock_waits_outside_stress(record, context, LOCK_WAIT_HINT, DEFAULT_LOCK_WAIT_MS)
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for wait in stress.lock_waits:
        blocked = wait["blocked"]
        key = (blocked.get("site"), blocked.get("sql"),
               tuple(sorted((b.get("site") or "", b.get("sql") or "") for b in wait["blockers"])))
        groups.setdefault(key, []).append(wait)
    findings = []
    threshold = stress.lock_wait_ms
    for waits in groups.values():
        longest = max(waits, key=lambda w: w["wait_ms"])
        blocked = longest["blocked"]
        site = f" at {blocked['site']}" if blocked.get("site") else ""
        lines = [f"{who(blocked.get('thread'), blocked.get('pid'))}{site} waited "
                 f"{longest['wait_ms']:.0f} ms: {blocked.get('sql') or '(statement not sampled)'}",
                 f"    for {lock_text(blocked.get('waits_for'))}"]
        for blocker in longest["blockers"]:
            state = f", {blocker['state']}" if blocker.get("state") else ""
            where = f" at {blocker['site']}" if blocker.get("site") else ""
            last = (f", last statement: {blocker['sql']}" if blocker.get("sql")
                    else f" ({blocker['note']})" if blocker.get("note") else "")
            lines.append(f"blocked by {who(blocker.get('thread'), blocker.get('pid'))}{state}"
                         f"{where}{last}")
        findings.append(Finding(
            rule="lock-wait",
            nodeid=record.nodeid,
            phase="call",
            message=(f"a statement waited {longest['wait_ms']:.0f} ms for a lock held by another "
                     f"thread (threshold {threshold} ms; {len(waits)} time(s) in "
                     f"{len({w['round'] for w in waits})} round(s))"),
            hint=LOCK_WAIT_HINT,
            evidence={"waits": waits, "max_wait_ms": longest["wait_ms"], "lines": lines},
        ))
    return findings


def graph_lines(graph: dict[str, Any] | None) -> list[str]:
    if not graph or not graph.get("edges"):
        return []
    nodes = {n["pid"]: n for n in graph.get("nodes", ())}
    lines = ["wait-for graph:"]
    for edge in graph["edges"][:GRAPH_EDGES_SHOWN]:
        blocked, blocker = nodes.get(edge["blocked"], {}), nodes.get(edge["blocker"], {})
        site = f" at {blocked['site']}" if blocked.get("site") else ""
        where = f" at {blocker['site']}" if blocker.get("site") else ""
        lines.append(f"  {who(blocked.get('thread'), edge['blocked'])}{site} "
                     f"({blocked.get('sql') or '?'}) waits for "
                     f"{lock_text(blocked.get('waits_for'))} held by "
                     f"{who(blocker.get('thread'), edge['blocker'])}{where}"
                     + (f" [{blocker['state']}]" if blocker.get("state") else ""))
    return lines


@rule("stress-hang", "fail", "a stress round did not finish in time", stress=STRESS_ON)
def check_stress_hang(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    stress: StressFacts | None = record.facts.get(STRESS)
    hang = stress.hang if stress is not None else None
    if stress is None or hang is None:
        return ()
    stuck = hang.stuck_threads
    ended = hang.ended_after_ms / 1000.0
    action_text = []
    if hang.cancelled_pids:
        action_text.append(f"cancelled pid {', '.join(map(str, hang.cancelled_pids))}")
    if hang.terminated_pids:
        action_text.append(f"terminated pid {', '.join(map(str, hang.terminated_pids))}")
    done = "; dbguard " + " and ".join(action_text) if action_text else ""
    message = (f"stress round {hang.round} of {stress.rounds_planned} did not finish within "
               f"{hang.timeout_s:g} s: thread{'s' if len(stuck) != 1 else ''} "
               f"{', '.join(map(str, stuck))} stuck{done}; the round ended after {ended:.1f} s")
    lines = graph_lines(hang.graph)
    if hang.lock_analysis != "on":
        lines.append(f"no backend was cancelled: {hang.lock_analysis}")
    for index in stuck:
        stack = hang.stacks.get(str(index)) or []
        lines.append(f"thread {index} was at (innermost last):")
        shown = stack[-STACK_FRAMES_SHOWN:]
        if len(stack) > len(shown):
            lines.append(f"    ... {len(stack) - len(shown)} outer frames")
        lines.extend(f"    {frame}" for frame in shown)
    if hang.abandoned_threads:
        lines.append(f"thread{'s' if len(hang.abandoned_threads) != 1 else ''} "
                     f"{', '.join(map(str, hang.abandoned_threads))} did not return even "
                     "after their backends were stopped (a Python-level wait): left behind as "
                     "daemon threads so the session goes on")
    return (Finding(
        rule="stress-hang",
        nodeid=record.nodeid,
        phase="call",
        message=message,
        hint=HANG_HINT,
        evidence={"hang": hang.to_dict(), "lines": lines},
    ),)
