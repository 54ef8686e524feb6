"""Lifecycle rules: connection leaks, open transactions, swallowed errors, async ORM, pools."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from ..events import (
    FLAG_IN_EVENT_LOOP,
    NO_SITE,
    Finding,
    TestRecord,
)
from ..facts import CENSUS, PSYCOPG, CensusFacts, PsycopgFacts
from ..text import short_sql
from .registry import PROBE_CENSUS, PROBE_LIFECYCLE, PROBE_PSYCOPG, RuleOption, TestContext, rule

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
HINT_SWALLOWED = ("give the statement that may fail its own savepoint so that only it is rolled "
                  "back: `try: with transaction.atomic(): ...  except IntegrityError: ...`; "
                  "or let the error propagate")
HINT_ASYNC = ("in async code use the async ORM (`await Model.objects.aget(...)`, `acount()`, "
              "`async for`) or move the sync code into `await sync_to_async(func)()`; a sync "
              "query on the event loop stalls everything else the loop serves, and "
              "DJANGO_ALLOW_ASYNC_UNSAFE only hides the error")


def describe_state(state: dict[str, Any]) -> str:
    """idle / idle in transaction / idle in transaction (aborted), as PostgreSQL names them."""
    driver = state.get("driver")
    if driver == "in error":
        return "idle in transaction (aborted)"
    if driver == "in transaction" or state.get("depth") or not state.get("autocommit", True):
        return "idle in transaction"
    return "idle"


def _lifecycle(record: TestRecord) -> dict[str, Any]:
    return record.facts.get("lifecycle") or {}


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _pid(pid: int | None) -> str:
    return f", backend pid {pid}" if pid else ""


def _where(site: str | None, phase: str) -> str:
    return f"opened at {site or 'an unknown place'} during {phase}"


def _census_states(record: TestRecord) -> dict[int | None, str]:
    census: CensusFacts = record.facts.get(CENSUS) or CensusFacts()
    return {b.pid: b.state for b in census.backends}


# -- connection-leak ----------------------------------------------------------------------------

@rule("connection-leak", "fail", "a connection opened by the test is still open",
      stage="teardown", probes=CENSUS_PROBES)
def check_connection_leak(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    states = _census_states(record)
    lines: list[str] = []
    hints: list[str] = []
    accounted: set[int | None] = set()

    def hint(text: str) -> None:
        if text not in hints:
            hints.append(text)

    for conn in _lifecycle(record).get("connections", ()):
        if not conn["open"]:
            continue
        accounted.add(conn["pid"])
        state = states.get(conn["pid"]) or describe_state(conn["state"] or {})
        alive = "still running" if conn["thread_alive"] else "exited"
        opened = (_where(conn["site"], conn["phase"]) if conn["site"] or not conn["via"]
                  else f"opened by sync_to_async code (Django's async ORM) during "
                       f"{conn['phase']}")
        lines.append(f"Django connection '{conn['alias']}' ({conn['vendor']}) of thread "
                     f"{conn['thread']} ({alive}){_pid(conn['pid'])}, {state}: {opened}")
        hint(HINT_ASYNC_EXECUTOR if conn["via"] == "sync_to_async" else HINT_THREAD)
    raw: PsycopgFacts = record.facts.get(PSYCOPG) or PsycopgFacts()
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
    census: CensusFacts = record.facts.get(CENSUS) or CensusFacts()
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
        message=f"{_plural(n, 'connection', 'connections')} opened by this test "
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
    lifecycle = _lifecycle(record)
    txstate = lifecycle.get("txstate", {})
    states = _census_states(record)
    lines: list[str] = []
    accounted: set[int | None] = set()
    before = {s["alias"]: s for s in txstate.get("setup", ())}
    for end in txstate.get("call", ()):
        if not end["open"]:
            continue
        start = before.get(end["alias"]) or {"depth": 0, "autocommit": True, "driver": "idle"}
        problems = []
        if end["depth"] > start["depth"]:
            problems.append(f"atomic depth is {end['depth']} at the end of the test body, "
                            f"{start['depth']} when it began: an atomic block was entered and "
                            f"never exited")
        # an outermost atomic block turns autocommit off itself: one line says both
        elif not end["autocommit"] and start["autocommit"]:
            problems.append("autocommit is off at the end of the test body: "
                            "transaction.set_autocommit(False) was never undone")
        # inside atomic or with autocommit off the driver is in a transaction by design;
        # outside both, Django believes it is in autocommit mode and someone sent BEGIN
        if (not problems and not end["depth"] and end["autocommit"]
                and end["driver"] in ("in transaction", "in error")
                and start.get("driver") in ("idle", None)):
            problems.append(f"the driver is {end['driver']} at the end of the test body "
                            f"(it was idle when the body began): a transaction was begun "
                            f"outside atomic and never ended")
        for problem in problems:
            lines.append(f"Django connection '{end['alias']}' of the test thread: {problem}")
    for conn in lifecycle.get("connections", ()):
        if not conn["open"] or not conn["state"]:
            continue
        state = states.get(conn["pid"]) or describe_state(conn["state"])
        if state.startswith("idle in transaction"):
            accounted.add(conn["pid"])
            lines.append(f"Django connection '{conn['alias']}' of thread {conn['thread']}"
                         f"{_pid(conn['pid'])} is still open and {state} after teardown: "
                         f"{_where(conn['site'], conn['phase'])}")
    raw: PsycopgFacts = record.facts.get(PSYCOPG) or PsycopgFacts()
    for raw_conn in raw.connections:
        if not raw_conn.open:
            continue
        state = states.get(raw_conn.pid) or _raw_state(raw_conn.driver)
        if state.startswith("idle in transaction"):
            accounted.add(raw_conn.pid)
            lines.append(f"{raw_conn.kind} connection of thread {raw_conn.thread}"
                         f"{_pid(raw_conn.pid)} is still open and {state} after teardown: "
                         f"{_where(raw_conn.site, raw_conn.phase)}")
    census: CensusFacts = record.facts.get(CENSUS) or CensusFacts()
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
        message=f"{_plural(n, 'connection was', 'connections were')} left inside a "
                f"transaction",
        hint=HINT_OPEN_TX,
        evidence={"lines": lines},
    ),)


# -- swallowed-db-error -------------------------------------------------------------------------

@rule("swallowed-db-error", "fail", "a database error was caught inside atomic and the "
      "transaction left unusable", probes=LIFECYCLE_PROBES, restores_connection=True)
def check_swallowed_db_error(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    lifecycle = _lifecycle(record)
    raised_facts = record.facts.get("raised") or {}
    raised = set(raised_facts.get("exc_ids", ()))
    caught = [e for e in lifecycle.get("errors", ()) if e["caught_by"] == "code"]
    # an error swallowed inside its block never left it, even when a failure the test ends
    # with names it as its cause (TransactionManagementError is raised `from` it)
    findings = _swallowed_in_block([e for e in caught if e.get("in_block")], record,
                                   raised_facts.get("type"))
    swallowed = [e for e in caught if not e.get("in_block") and e["exc_id"] not in raised]
    if not swallowed:
        return findings
    for end in lifecycle.get("txstate", {}).get("call", ()):
        if not end["open"]:
            continue
        reasons = []
        if end["needs_rollback"] and end["depth"]:
            reasons.append("needs_rollback")
        if end["driver"] == "in error":
            reasons.append("the driver reports INERROR")
        errors = [e for e in swallowed if e["alias"] == end["alias"]
                  and e["thread_ident"] == lifecycle.get("test_ident", e["thread_ident"])]
        if not reasons or not errors:
            continue
        lines = _error_lines(errors)
        findings.append(Finding(
            rule="swallowed-db-error",
            nodeid=record.nodeid,
            phase="call",
            message=f"{_plural(len(errors), 'database error was', 'database errors were')} "
                    f"caught inside atomic and the transaction on '{end['alias']}' was left "
                    f"unusable ({', '.join(reasons)}); the next query in it fails",
            hint=HINT_SWALLOWED,
            evidence={"lines": lines},
        ))
    return findings


def _error_lines(errors: list[dict[str, Any]]) -> list[str]:
    lines = []
    for error in errors:
        code = f" (SQLSTATE {error['sqlstate']})" if error["sqlstate"] else ""
        lines.append(f"{error['type']}{code}: {error['message']}")
        lines.append(f"    from {error['sql']} at {error['site'] or 'an unknown place'}; "
                     f"caught and not re-raised in {error['caught_in']}() at "
                     f"{error['caught_at']}")
    return lines


def _swallowed_in_block(errors: list[dict[str, Any]], record: TestRecord,
                        failed_with: str | None) -> list[Finding]:
    """Errors caught inside the very atomic block they broke, one finding per block."""
    blocks: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for error in errors:
        block = error["in_block"]
        blocks.setdefault((error["alias"], block["block_exit"], block["outcome"]),
                          []).append(error)
    findings = []
    for (alias, block_exit, outcome), group in blocks.items():
        failed = (f"; the test then failed with {failed_with}, which this explains"
                  if failed_with else "")
        findings.append(Finding(
            rule="swallowed-db-error",
            nodeid=record.nodeid,
            phase="call",
            message=f"{_plural(len(group), 'database error was', 'database errors were')} "
                    f"caught inside the atomic block at {block_exit} (on "
                    f"'{alias}') instead of outside it: the block {outcome}{failed}",
            hint=HINT_SWALLOWED,
            evidence={"lines": _error_lines(group), "block_exit": block_exit},
        ))
    return findings


# -- async-orm ----------------------------------------------------------------------------------

@rule("async-orm", "fail", "a query ran on a thread with a running event loop",
      probes=LIFECYCLE_PROBES)
def check_async_orm(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    findings = []
    groups: Counter[tuple[int, int]] = Counter()
    catalog = None
    for phase in ("setup", "call"):
        phase_record = record.phase(phase)
        for shape_i, site_i, _, _, _, flags, _, _ in phase_record.rows:
            if flags & FLAG_IN_EVENT_LOOP:
                groups[(site_i, shape_i)] += 1
                catalog = phase_record.catalog
    if groups and catalog is not None:
        total = sum(groups.values())
        unsafe = _lifecycle(record).get("allow_async_unsafe")
        lines = []
        for (site_i, shape_i), n in sorted(groups.items(), key=lambda g: (-g[1], g[0])):
            site = catalog.sites[site_i] if site_i != NO_SITE else None
            lines.append(f"{n}× {short_sql(catalog.shapes[shape_i].fingerprint)}  at "
                         f"{site or 'an unknown place'}")
        message = (f"{_plural(total, 'query', 'queries')} ran on a thread with a running event "
                   f"loop: sync ORM code inside async code")
        if unsafe:
            message += (" (DJANGO_ALLOW_ASYNC_UNSAFE is set, so Django did not raise "
                        "SynchronousOnlyOperation)")
        findings.append(Finding(rule="async-orm", nodeid=record.nodeid, phase="call",
                                message=message, hint=HINT_ASYNC, evidence={"lines": lines}))
    raised = record.facts.get("raised") or {}
    if "sync_only_site" in raised:
        where = raised["sync_only_site"] or "an unknown place"
        findings.append(Finding(
            rule="async-orm", nodeid=record.nodeid, phase="call",
            message=f"the test failed with SynchronousOnlyOperation: sync ORM code was called "
                    f"from async code at {where}",
            hint=HINT_ASYNC,
            evidence={"lines": []},
        ))
    return findings


# -- pool-exhausted -----------------------------------------------------------------------------

@rule("pool-exhausted", "fail", "connection pool or server connection limit reached",
      probes=LIFECYCLE_PROBES,
      options=(RuleOption("max_connections", None, "--dbguard-max-connections"),))
def check_pool_exhausted(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    findings = []
    raw: PsycopgFacts = record.facts.get(PSYCOPG) or PsycopgFacts()
    for timeout in raw.timeouts:
        wait = f" after {timeout.timeout:g} s" if timeout.timeout is not None else ""
        size = (f" with all {_plural(timeout.max_size, 'connection', 'connections')} "
                f"checked out" if timeout.max_size else "")
        lines = [f"checked out at {site} and not returned by then"
                 for site in timeout.checked_out_here]
        findings.append(Finding(
            rule="pool-exhausted", nodeid=record.nodeid, phase=timeout.phase,
            message=f"pool '{timeout.pool}' was exhausted: getconn() timed out{wait}{size}, "
                    f"at {timeout.site or 'an unknown place'}",
            hint="return every connection as soon as the work is done (`with pool.connection() "
                 "as conn:`), and size the pool for the concurrency the code really has",
            evidence={"lines": lines},
        ))
    for refused in raw.refused:
        findings.append(Finding(
            rule="pool-exhausted", nodeid=record.nodeid, phase=refused.phase,
            message=f"PostgreSQL refused a connection with {refused.sqlstate} (too many "
                    f"connections) at {refused.site or 'an unknown place'}: "
                    f"{refused.message}",
            hint="close connections threads and raw clients no longer need, or put a pool "
                 "(or PgBouncer) in front of PostgreSQL; max_connections is a hard limit",
            evidence={"lines": []},
        ))
    limit = context.options.get("max_connections")
    if limit is not None and record.peak_connections > limit:
        lines = list(record.facts.get("peak_connections", ()))
        findings.append(Finding(
            rule="pool-exhausted", nodeid=record.nodeid, phase="call",
            message=f"{record.peak_connections} connections were open at once, more than "
                    f"--dbguard-max-connections {limit}; at the peak:",
            hint="bound the concurrency that opens connections (fewer worker threads, a "
                 "shared pool) and close each thread's connection when its work is done",
            evidence={"lines": lines, "peak": record.peak_connections, "limit": limit},
        ))
    return findings
