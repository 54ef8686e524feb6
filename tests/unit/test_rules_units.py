"""Rule edge cases over hand-built records: each case that must fire has a near miss."""

from __future__ import annotations

import pytest

from pytest_dbguard.events import Finding, QueryContext, Relation
from pytest_dbguard.facts import (
    CALL_ERROR,
    CENSUS,
    PSYCOPG,
    QUERY_TIMEOUT,
    CallError,
    CensusFacts,
    PoolCheckout,
    PoolState,
    PoolTimeout,
    PsycopgFacts,
    QueryTimeoutFacts,
    RawConnection,
    RefusedConnection,
    ServerBackend,
)
from pytest_dbguard.rules import builtin_registry, evaluate
from pytest_dbguard.rules.budget import Budget, check_budget
from pytest_dbguard.rules.duplicate import check_duplicate
from pytest_dbguard.rules.lifecycle import check_connection_leak, check_open_transaction
from pytest_dbguard.rules.nplusone import check_nplusone_loop, is_test_code
from pytest_dbguard.rules.pools import check_pool_exhausted
from pytest_dbguard.rules.shape import (
    check_pgbouncer_unsafe,
    check_query_timeout,
    check_replica_write,
    check_slow_query,
    check_template_query,
)
from pytest_dbguard.rules.stress import check_deadlock
from pytest_dbguard.text import short_sql
from tests.records import APP_SITE, NODEID, TEST_SITE, RecordBuilder, context

pytestmark = pytest.mark.unit

BOOK = 'SELECT "id" FROM "shop_book" WHERE "id" = 1'
INSERT = 'INSERT INTO "shop_book" ("title") VALUES (\'x\')'


def one(found) -> Finding:
    [finding] = list(found)
    return finding


# -- slow-query ---------------------------------------------------------------------------

@pytest.mark.parametrize(("ms", "limit", "fires"), [
    (100.0, 100.0, True), (99.9, 100.0, False), (250.0, 100.0, True), (30.0, 25.0, True),
    (24.0, 25.0, False),
])
def test_slow_query_limit_is_inclusive(ms, limit, fires):
    record = RecordBuilder().query(BOOK, duration_ms=ms).build()
    assert bool(list(check_slow_query(record, context(slow_ms=limit)))) is fires


def test_slow_query_groups_one_shape_and_site():
    record = (RecordBuilder().query(BOOK, duration_ms=150, times=2)
              .query(BOOK, duration_ms=300).build())
    finding = one(check_slow_query(record, context()))
    assert finding.evidence["count"] == 3 and finding.evidence["ms"] == 300.0
    assert f"took 3× up to 300 ms (limit 100 ms) at {APP_SITE}" in finding.message


def test_slow_query_ignores_transaction_control_and_other_phases():
    record = (RecordBuilder().query("COMMIT", duration_ms=500)
              .query(BOOK, duration_ms=500, phase="setup").build())
    assert list(check_slow_query(record, context())) == []


# -- budget -------------------------------------------------------------------------------

@pytest.mark.parametrize(("n", "limit", "fires"), [(2, 1, True), (1, 1, False), (0, 0, False),
                                                    (1, 0, True)])
def test_budget_counts_call_queries(n, limit, fires):
    builder = RecordBuilder().query(BOOK, phase="setup", times=5)
    if n:
        builder.query(BOOK, times=n)
    found = list(check_budget(builder.build(), context(budget=Budget(limit))))
    assert bool(found) is fires


def test_budget_per_alias_and_transaction_control():
    record = (RecordBuilder().query(BOOK, times=2).query(BOOK, alias="other", times=3)
              .query("SAVEPOINT s1", times=2).build())
    assert list(check_budget(record, context(budget=Budget(2, ("default",))))) == []
    assert one(check_budget(record, context(budget=Budget(2, ("other",))))).evidence[
        "count"] == 3
    counted = one(check_budget(record, context(budget=Budget(6, None, count_tx=True))))
    assert counted.evidence["count"] == 7


def test_max_queries_applies_without_a_marker_and_the_marker_wins():
    record = RecordBuilder().query(BOOK, times=3).build()
    assert one(check_budget(record, context(max_queries=2))).evidence["budget"] == 2
    assert list(check_budget(record, context(max_queries=2, budget=Budget(5)))) == []
    assert list(check_budget(record, context())) == []


# -- replica-write --------------------------------------------------------------------------

def test_replica_write_needs_a_write_on_a_named_alias():
    record = (RecordBuilder().query(INSERT, alias="replica", times=2)
              .query(BOOK, alias="replica").query(INSERT, alias="default").build())
    finding = one(check_replica_write(record, context(readonly_aliases=("replica",))))
    assert finding.evidence["count"] == 2 and finding.evidence["alias"] == "replica"
    assert finding.message.startswith('write on read-only alias "replica": 2× INSERT')
    assert list(check_replica_write(record, context())) == []
    assert list(check_replica_write(record, context(readonly_aliases=("other",)))) == []


# -- pgbouncer-unsafe ------------------------------------------------------------------------

@pytest.mark.parametrize(("sql", "kind"), [
    ("SET search_path TO app", "session-level SET"),
    ("SET SESSION statement_timeout = 5", "session-level SET"),
    ("SELECT pg_advisory_lock(42)", "session advisory lock"),
    ("LISTEN jobs", "LISTEN"),
    ("PREPARE q AS SELECT 1", "server-side prepared statement"),
    ("SELECT set_config('app.user', '1', false)", "session-level set_config()"),
])
def test_pgbouncer_unsafe_session_state(sql, kind):
    record = RecordBuilder().query(sql, vendor="postgresql").build()
    assert one(check_pgbouncer_unsafe(record, context())).evidence["kind"] == kind


@pytest.mark.parametrize(("sql", "vendor"), [
    ("SET LOCAL statement_timeout = 5", "postgresql"),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "postgresql"),
    ("SET CONSTRAINTS ALL DEFERRED", "postgresql"),
    ("SELECT pg_advisory_xact_lock(42)", "postgresql"),
    ("SELECT set_config('app.user', '1', true)", "postgresql"),
    ("SET search_path TO app", "sqlite"),
])
def test_pgbouncer_safe_statements(sql, vendor):
    record = RecordBuilder().query(sql, vendor=vendor).build()
    assert list(check_pgbouncer_unsafe(record, context())) == []


# -- template-query ----------------------------------------------------------------------------

def test_template_query_names_the_template_and_how():
    tag = QueryContext(template="shop/list.html", template_via="tag",
                       template_function="latest_books")
    record = (RecordBuilder().query(BOOK, context=tag, times=2)
              .query(BOOK, site=TEST_SITE).build())
    finding = one(check_template_query(record, context()))
    assert finding.evidence["count"] == 2 and finding.evidence["via"] == "tag"
    assert "template tag or filter latest_books() queried" in finding.message


def test_template_query_ignores_queries_outside_templates():
    relation = Relation("forward", "Book", "author", "Author", "shop_book")
    record = RecordBuilder().query(BOOK, context=QueryContext(relation=relation)).build()
    assert list(check_template_query(record, context())) == []


# -- nplusone-loop and duplicate ---------------------------------------------------------------

@pytest.mark.parametrize(("times", "threshold", "fires"), [(3, 3, True), (2, 3, False),
                                                           (5, 6, False), (2, 2, True)])
def test_loop_threshold(times, threshold, fires):
    builder = RecordBuilder()
    for i in range(times):
        builder.query(BOOK, params=i + 1)
    found = list(check_nplusone_loop(builder.build(), context(nplusone_threshold=threshold)))
    assert bool(found) is fires


def test_a_loop_in_test_code_is_not_the_apps_problem():
    builder = RecordBuilder()
    for i in range(5):
        builder.query(BOOK, params=i + 1, site=TEST_SITE)
    assert list(check_nplusone_loop(builder.build(), context())) == []


def test_the_same_parameters_each_time_is_a_duplicate_not_a_loop():
    record = RecordBuilder().query(BOOK, times=4, params=7).build()
    assert list(check_nplusone_loop(record, context())) == []
    finding = one(check_duplicate(record, context()))
    assert finding.evidence["count"] == 4 and finding.evidence["sites"] == [APP_SITE]


def test_duplicates_need_the_parameter_key_and_the_threshold():
    assert list(check_duplicate(RecordBuilder().query(BOOK, times=4).build(), context())) == []
    assert list(check_duplicate(RecordBuilder().query(BOOK, times=2, params=7).build(),
                                context())) == []


def test_duplicates_are_counted_per_unit_of_work():
    record = (RecordBuilder().query(BOOK, times=2, params=7, unit=1, unit_label="GET /a")
              .query(BOOK, times=2, params=7, unit=2, unit_label="GET /b").build())
    assert list(check_duplicate(record, context())) == []


@pytest.mark.parametrize(("path", "is_test"), [
    ("tests/helpers.py", True), ("shop/tests/factories.py", True), ("test_shop.py", True),
    ("shop/views_test.py", True), ("conftest.py", True), ("shop/views.py", False),
    ("shop/testing.py", False), ("contest.py", False),
])
def test_what_counts_as_test_code(path, is_test):
    from pytest_dbguard.events import CallSite

    assert is_test_code(CallSite(path, 1, "f")) is is_test


# -- evaluate: actions, allow reasons, stages -----------------------------------------------------

def test_evaluate_stamps_action_and_allow_reason_and_skips_off_rules():
    record = (RecordBuilder().query(BOOK, duration_ms=500)
              .query("SET search_path TO x", vendor="postgresql").build())
    found = evaluate(record, context(), {"slow-query": "fail", "pgbouncer-unsafe": "off"},
                     {"slow-query": "known slow"}, registry=builtin_registry())
    assert [(f.rule, f.action, f.allowed_reason) for f in found] == [
        ("slow-query", "fail", "known slow")]


def test_evaluate_judges_teardown_rules_only_at_teardown():
    record = RecordBuilder().query(BOOK, duration_ms=500).build()
    actions = {"slow-query": "warn"}
    assert evaluate(record, context(), actions, {}, stage="teardown") == []
    assert len(evaluate(record, context(), actions, {}, stage="call")) == 1


@pytest.mark.parametrize(("fingerprint", "short"), [
    ('SELECT "a", "b" FROM "t" WHERE "a" = %s', 'SELECT ... FROM "t" WHERE "a" = %s'),
    ('SELECT DISTINCT "a" FROM "t"', 'SELECT DISTINCT ... FROM "t"'),
    ('SELECT COUNT(*) AS "n" FROM "t"', 'SELECT COUNT(*) AS "n" FROM "t"'),
    ("UPDATE t SET a = 1", "UPDATE t SET a = 1"),
])
def test_short_sql(fingerprint, short):
    assert short_sql(fingerprint) == short


def test_short_sql_cuts_long_text():
    text = short_sql("UPDATE t SET " + "a = 1, " * 50, width=40)
    assert len(text) == 40 and text.endswith("...")


def test_record_builder_defaults():
    record = RecordBuilder().query(BOOK).build()
    assert record.nodeid == NODEID and record.vendors == ("sqlite",)
    assert record.phase("call").query_count == 1 and record.phase("setup").query_count == 0


# -- typed facts: query timeout, call error, census ------------------------------------------------

PG_TIMEOUT = {"error": "canceling statement due to statement timeout", "sqlstate": "57014"}


@pytest.mark.parametrize(("vendor", "extra", "fires"), [
    ("postgresql", PG_TIMEOUT, True),
    ("postgresql", {"error": "canceling statement due to lock timeout", "sqlstate": "55P03"},
     True),
    ("postgresql", {"error": "division by zero", "sqlstate": "22012"}, False),
    ("sqlite", {"error": "interrupted"}, True),
    ("sqlite", {"error": "no such table: x"}, False),
])
def test_query_timeout_needs_a_cancelled_statement(vendor, extra, fires):
    record = (RecordBuilder().query(BOOK, vendor=vendor, error=True, extra=extra)
              .fact(QUERY_TIMEOUT, QueryTimeoutFacts(100)).build())
    found = list(check_query_timeout(record, context()))
    assert bool(found) is fires
    if fires:
        assert found[0].message.startswith("query cancelled after 100 ms (query_timeout)")


def test_query_timeout_is_silent_without_a_timeout_applied():
    record = RecordBuilder().query(BOOK, vendor="postgresql", error=True, extra=PG_TIMEOUT).build()
    assert list(check_query_timeout(record, context())) == []


DEADLOCK_ERROR = {"error": "deadlock detected", "sqlstate": "40P01"}


@pytest.mark.parametrize(("call_error", "action"), [
    (CallError("OperationalError", "40P01"), "fail"), (None, "warn"),
    (CallError("AssertionError", None), "warn"),
])
def test_a_deadlock_outside_stress_fails_only_when_it_propagated(call_error, action):
    builder = RecordBuilder().query(BOOK, vendor="postgresql", error=True, extra=DEADLOCK_ERROR)
    if call_error is not None:
        builder.fact(CALL_ERROR, call_error)
    finding = one(check_deadlock(builder.build(), context()))
    assert finding.action == action and finding.evidence["count"] == 1


def test_no_failed_statement_no_deadlock():
    record = RecordBuilder().query(BOOK, vendor="postgresql").fact(
        CALL_ERROR, CallError("OperationalError", "40P01")).build()
    assert list(check_deadlock(record, context())) == []


def census(*backends: ServerBackend) -> CensusFacts:
    return CensusFacts(tuple(backends))


def test_an_unknown_backend_left_connected_is_a_leak():
    record = RecordBuilder().fact(CENSUS, census(
        ServerBackend(41, "test_shop", "idle", "worker", known=False),
        ServerBackend(42, "test_shop", "idle", known=True))).build()
    finding = one(check_connection_leak(record, context()))
    assert finding.evidence["lines"] == [
        "PostgreSQL backend pid 41 on database test_shop (idle, application_name 'worker') "
        "connected during the test and is still there; no driver dbguard hooks opened it"]


def test_an_unknown_backend_idle_in_transaction_is_an_open_transaction():
    record = RecordBuilder().fact(CENSUS, census(
        ServerBackend(41, "test_shop", "idle in transaction"),
        ServerBackend(43, "test_shop", "idle"))).build()
    finding = one(check_open_transaction(record, context()))
    assert finding.evidence["lines"] == [
        "PostgreSQL backend pid 41 on database test_shop connected during the test and is idle "
        "in transaction after teardown"]
    assert list(check_open_transaction(RecordBuilder().build(), context())) == []


# -- typed psycopg facts: raw connections, pool checkouts, pools, exhaustion --------------------

def psycopg(**facts) -> PsycopgFacts:
    return PsycopgFacts(**facts)


def test_raw_connections_checkouts_and_pools_left_open_are_leaks():
    facts = psycopg(
        connections=(RawConnection("psycopg", "MainThread", "call", 51, "shop/sync.py:4", True,
                                   "idle"),
                     RawConnection("psycopg", "MainThread", "call", 52, "shop/sync.py:9", False)),
        checkouts=(PoolCheckout("orders", "call", "shop/jobs.py:3", "MainThread", 53, False,
                                True),
                   PoolCheckout("orders", "call", "shop/jobs.py:8", "MainThread", 54, True,
                                True)),
        pools=(PoolState("orders", "setup", "conftest.py:12", 4, True),))
    finding = one(check_connection_leak(RecordBuilder().fact(PSYCOPG, facts).build(),
                                        context()))
    assert finding.evidence["lines"] == sorted([
        "psycopg connection of thread MainThread, backend pid 51, idle: opened at "
        "shop/sync.py:4 during call",
        "connection of pool 'orders', backend pid 53 checked out at shop/jobs.py:3 during call "
        "by thread MainThread and never returned",
        "pool 'orders' opened at conftest.py:12 during setup is still open",
    ])


def test_closed_raw_connections_and_returned_checkouts_are_not_leaks():
    facts = psycopg(
        connections=(RawConnection("psycopg", "MainThread", "call", 52, None, False),),
        checkouts=(PoolCheckout("orders", "call", None, "MainThread", 54, True, True),),
        pools=(PoolState("orders", "setup", None, 4, False),))
    record = RecordBuilder().fact(PSYCOPG, facts).build()
    assert list(check_connection_leak(record, context())) == []
    assert list(check_open_transaction(record, context())) == []


def test_a_raw_connection_left_in_a_transaction():
    facts = psycopg(connections=(
        RawConnection("psycopg", "worker", "call", 61, "shop/sync.py:4", True, "in transaction"),
        RawConnection("psycopg", "worker", "call", 62, "shop/sync.py:5", True, "idle"),))
    finding = one(check_open_transaction(RecordBuilder().fact(PSYCOPG, facts).build(),
                                         context()))
    assert finding.evidence["lines"] == [
        "psycopg connection of thread worker, backend pid 61 is still open and idle in "
        "transaction after teardown: opened at shop/sync.py:4 during call"]


def test_pool_timeouts_and_refused_connections_exhaust():
    facts = psycopg(
        timeouts=(PoolTimeout("orders", 2, 0.5, "shop/jobs.py:20", "call", "MainThread",
                              ("shop/jobs.py:3", "shop/jobs.py:4")),),
        refused=(RefusedConnection("call", "shop/sync.py:7", "MainThread", "53300",
                                   "sorry, too many clients already"),))
    timeout, refused = check_pool_exhausted(RecordBuilder().fact(PSYCOPG, facts).build(),
                                            context())
    assert timeout.message == ("pool 'orders' was exhausted: getconn() timed out after 0.5 s "
                               "with all 2 connections checked out, at shop/jobs.py:20")
    assert timeout.evidence["lines"] == [
        "checked out at shop/jobs.py:3 and not returned by then",
        "checked out at shop/jobs.py:4 and not returned by then"]
    assert refused.message == ("PostgreSQL refused a connection with 53300 (too many "
                               "connections) at shop/sync.py:7: sorry, too many clients already")
    assert list(check_pool_exhausted(RecordBuilder().build(), context())) == []
