"""Lifecycle rules judged after teardown: connections and transactions a test left open.

The other lifecycle rules live in swallowed.py, async_orm.py and pools.py; all of them read the
lifecycle facts (`lifecycle_facts`) and the psycopg probe.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..events import Finding, TestRecord
from ..facts import (
    CENSUS,
    PSYCOPG,
    CensusFacts,
    ConnectionState,
    PsycopgFacts,
    ThreadConnection,
)
from ..text import plural
from .registry import PROBE_CENSUS, PROBE_LIFECYCLE, PROBE_PSYCOPG, TestContext, rule

# Every lifecycle rule reads the transaction-state and psycopg probes; leaks and open
# transactions also ask the server which backends are still there.
LIFECYCLE_PROBES = frozenset({PROBE_LIFECYCLE, PROBE_PSYCOPG})
CENSUS_PROBES = LIFECYCLE_PROBES | {PROBE_CENSUS}

HINT_THREAD = ("close the thread's connections before it ends: call django.db.connection.close() "
               "(or django.db.close_old_connections()) in a finally block of the thread's "
               "function, or shut the executor down after closing them")
HINT_ASYNC_EXECUTOR = ("Django's async ORM ran in asgiref's sync_to_async thread, whose connection "
                       "outlives the test (on PostgreSQL the test database can then not be "
                       "dropped): close it after async tests, e.g. in an autouse async fixture "
                       "that runs `await sync_to_async(django.db.connections.close_all)()` "
                       "after its yield")
HINT_RAW = ("open raw connections with `with psycopg.connect(...) as conn:` (or call "
            "conn.close() in a finally block) so they close on every path")
HINT_CHECKOUT = ("take pool connections with `with pool.connection() as conn:`, or return "
                 "them with pool.putconn(conn) in a finally block")
HINT_POOL = ("close pools the test creates: `with ConnectionPool(...) as pool:`, or "
             "pool.close() in the fixture's teardown")
HINT_UNHOOKED = ("find the code that connects to the test database without closing (through a "
                 "driver dbguard does not hook) and close its connection in the test's teardown")
HINT_OPEN_TX = ("end every transaction the code begins: use `with transaction.atomic():` "
                "rather than entering atomic by hand, undo transaction.set_autocommit(False) "
                "with commit() or rollback() and set_autocommit(True) in a finally block, and "
                "commit or roll back raw connections (`with conn.transaction():`); a session "
                "idle in transaction keeps its locks until it ends")


def describe_state(state: ConnectionState | None) -> str:
    """idle / idle in transaction / idle in transaction (aborted), as PostgreSQL names them."""
    if state is None:
        return "idle"
    if state.driver == "in error":
        return "idle in transaction (aborted)"
    if state.driver == "in transaction" or state.depth or not state.autocommit:
        return "idle in transaction"
    return "idle"


def lifecycle_facts(record: TestRecord) -> dict[str, Any]:
    """The lifecycle probe's facts: "txstate" (phase -> [ConnectionState]), "errors",
    "connections" ([ThreadConnection]), "test_ident", "allow_async_unsafe"."""
    return record.facts.get("lifecycle") or {}


def _thread_connections(record: TestRecord) -> list[ThreadConnection]:
    return lifecycle_facts(record).get("connections", [])


def _pid(pid: int | None) -> str:
    return f", backend pid {pid}" if pid else ""


def _where(site: str | None, phase: str) -> str:
    return f"opened at {site or 'an unknown place'} during {phase}"


# what a test without raw connections or census rows reads (built once, not per test)
NO_RAW = PsycopgFacts()
NO_CENSUS = CensusFacts()


def _census_states(record: TestRecord) -> dict[int | None, str]:
    census: CensusFacts | None = record.facts.get(CENSUS)
    return {b.pid: b.state for b in census.backends} if census is not None else {}


# -- connection-leak ----------------------------------------------------------------------------

@rule("connection-leak", "fail", "a connection opened by the test is still open",
      stage="teardown", probes=CENSUS_PROBES)
def check_connection_leak(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    thread_connections = _thread_connections(record)
    raw: PsycopgFacts = record.facts.get(PSYCOPG) or NO_RAW
    census: CensusFacts = record.facts.get(CENSUS) or NO_CENSUS
    if not (thread_connections or raw.connections or raw.checkouts or raw.pools
            or census.backends):
        return ()  # the test opened no connection that could still be open
    states = _census_states(record)
    lines: list[str] = []
    hints: list[str] = []
    accounted: set[int | None] = set()

    def hint(text: str) -> None:
        if text not in hints:
            hints.append(text)

    for conn in thread_connections:
        if not conn.open:
            continue
        accounted.add(conn.pid)
        state = states.get(conn.pid) or describe_state(conn.state)
        alive = "still running" if conn.thread_alive else "exited"
        opened = (_where(conn.site, conn.phase) if conn.site or not conn.via
                  else f"opened by sync_to_async code (Django's async ORM) during "
                       f"{conn.phase}")
        lines.append(f"Django connection '{conn.alias}' ({conn.vendor}) of thread "
                     f"{conn.thread} ({alive}){_pid(conn.pid)}, {state}: {opened}")
        hint(HINT_ASYNC_EXECUTOR if conn.via == "sync_to_async" else HINT_THREAD)
    for raw_conn in raw.connections:
        if not raw_conn.open:
            continue
        accounted.add(raw_conn.pid)
        state = states.get(raw_conn.pid) or _raw_state(raw_conn.driver)
        lines.append(f"{raw_conn.kind} connection of thread {raw_conn.thread}{_pid(raw_conn.pid)}, "
                     f"{state}: {_where(raw_conn.site, raw_conn.phase)}")
        hint(HINT_RAW)
    for checkout in raw.checkouts:
        if checkout.returned:
            continue
        accounted.add(checkout.pid)
        lines.append(f"connection of pool '{checkout.pool}'{_pid(checkout.pid)} checked "
                     f"out at {checkout.site or 'an unknown place'} during "
                     f"{checkout.phase} by thread {checkout.thread} and never returned")
        hint(HINT_CHECKOUT)
    for pool in raw.pools:
        if pool.open:
            lines.append(f"pool '{pool.name}' {_where(pool.site, pool.phase)} "
                         f"is still open")
            hint(HINT_POOL)
    for backend in census.backends:
        if backend.known or backend.pid in accounted:
            continue
        app = f", application_name '{backend.application_name}'" \
            if backend.application_name else ""
        lines.append(f"PostgreSQL backend pid {backend.pid} on database "
                     f"{backend.database} ({backend.state}{app}) connected during the "
                     f"test and is still there; no driver dbguard hooks opened it")
        hint(HINT_UNHOOKED)
    if not lines:
        return ()
    lines.sort()
    n = len(lines)
    return (Finding(
        rule="connection-leak",
        nodeid=record.nodeid,
        phase="teardown",
        message=f"{plural(n, 'connection', 'connections')} opened by this test "
                f"{'is' if n == 1 else 'are'} still open after teardown",
        hint="; ".join(hints),
        evidence={"lines": lines},
    ),)


def _raw_state(driver: str | None) -> str:
    if driver == "in error":
        return "idle in transaction (aborted)"
    if driver == "in transaction":
        return "idle in transaction"
    return "idle"


# -- open-transaction ---------------------------------------------------------------------------

@rule("open-transaction", "fail", "a connection is left inside a transaction",
      stage="teardown", probes=CENSUS_PROBES, restores_connection=True)
def check_open_transaction(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    facts = lifecycle_facts(record)
    txstate: dict[str, list[ConnectionState]] = facts.get("txstate", {})
    thread_connections = facts.get("connections", [])
    raw: PsycopgFacts = record.facts.get(PSYCOPG) or NO_RAW
    census: CensusFacts = record.facts.get(CENSUS) or NO_CENSUS
    starts, ends = txstate.get("setup", ()), txstate.get("call", ())
    if ends == starts:
        # every connection is as it was when the body began (the same states, often the same
        # objects): no transaction was begun and left by the body
        ends = ()
    if not (ends or thread_connections or raw.connections or census.backends):
        return ()
    states = _census_states(record)
    lines: list[str] = []
    accounted: set[int | None] = set()
    before = {s.alias: s for s in starts}
    for end in ends:
        if not end.open:
            continue
        start = before.get(end.alias) or ConnectionState(end.alias, end.vendor, open=True,
                                                         driver="idle")
        problems = []
        if end.depth > start.depth:
            problems.append(f"atomic depth is {end.depth} at the end of the test body, "
                            f"{start.depth} when it began: an atomic block was entered and "
                            f"never exited")
        # an outermost atomic block turns autocommit off itself: one line says both
        elif not end.autocommit and start.autocommit:
            problems.append("autocommit is off at the end of the test body: "
                            "transaction.set_autocommit(False) was never undone")
        # inside atomic or with autocommit off the driver is in a transaction by design;
        # outside both, Django believes it is in autocommit mode and someone sent BEGIN
        if (not problems and not end.depth and end.autocommit
                and end.driver in ("in transaction", "in error")
                and start.driver in ("idle", None)):
            problems.append(f"the driver is {end.driver} at the end of the test body "
                            f"(it was idle when the body began): a transaction was begun "
                            f"outside atomic and never ended")
        for problem in problems:
            lines.append(f"Django connection '{end.alias}' of the test thread: {problem}")
    for conn in thread_connections:
        if not conn.open or conn.state is None:
            continue
        state = states.get(conn.pid) or describe_state(conn.state)
        if state.startswith("idle in transaction"):
            accounted.add(conn.pid)
            lines.append(f"Django connection '{conn.alias}' of thread {conn.thread}"
                         f"{_pid(conn.pid)} is still open and {state} after teardown: "
                         f"{_where(conn.site, conn.phase)}")
    for raw_conn in raw.connections:
        if not raw_conn.open:
            continue
        state = states.get(raw_conn.pid) or _raw_state(raw_conn.driver)
        if state.startswith("idle in transaction"):
            accounted.add(raw_conn.pid)
            lines.append(f"{raw_conn.kind} connection of thread {raw_conn.thread}"
                         f"{_pid(raw_conn.pid)} is still open and {state} after teardown: "
                         f"{_where(raw_conn.site, raw_conn.phase)}")
    for backend in census.backends:
        if backend.pid in accounted or not backend.state.startswith("idle in transaction"):
            continue
        if backend.known:
            continue
        lines.append(f"PostgreSQL backend pid {backend.pid} on database "
                     f"{backend.database} connected during the test and is "
                     f"{backend.state} after teardown")
    if not lines:
        return ()
    lines.sort()
    n = len(lines)
    return (Finding(
        rule="open-transaction",
        nodeid=record.nodeid,
        phase="teardown",
        message=f"{plural(n, 'connection was', 'connections were')} left inside a "
                f"transaction",
        hint=HINT_OPEN_TX,
        evidence={"lines": lines},
    ),)
