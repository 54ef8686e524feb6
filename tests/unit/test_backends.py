"""The vendor seam: what each backend module says it can do, without a database."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pytest_dbguard.backends import (
    TIMEOUT_NONE,
    TIMEOUT_PROGRESS,
    TIMEOUT_SETTING,
    Backend,
    MonitorUnavailable,
    SessionSample,
    for_vendor,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("vendor", "timeout", "explains", "samples_locks"), [
    ("postgresql", TIMEOUT_SETTING, True, True),
    ("sqlite", TIMEOUT_PROGRESS, False, False),
    ("mysql", TIMEOUT_NONE, False, False),
    ("", TIMEOUT_NONE, False, False),
])
def test_capabilities(vendor, timeout, explains, samples_locks):
    backend = for_vendor(vendor)
    assert (backend.timeout, backend.explains, backend.samples_locks) == (
        timeout, explains, samples_locks)
    assert for_vendor(vendor) is backend  # one instance per vendor


@pytest.mark.parametrize(("vendor", "error", "sqlstate", "cancelled"), [
    ("postgresql", "canceling statement due to statement timeout", "57014", True),
    ("postgresql", "canceling statement due to lock timeout", "55P03", True),
    ("postgresql", "canceling statement due to user request", "57014", False),
    ("postgresql", "lock timeout", "40P01", False),
    ("sqlite", "interrupted", None, True),
    ("sqlite", "database is locked", None, False),
    ("mysql", "interrupted", None, False),
])
def test_cancelled_by_timeout(vendor, error, sqlstate, cancelled):
    assert for_vendor(vendor).cancelled_by_timeout(error, sqlstate) is cancelled


@pytest.mark.parametrize(("raw", "failed"), [
    (SimpleNamespace(info=SimpleNamespace(transaction_status=3)), True),
    (SimpleNamespace(info=SimpleNamespace(transaction_status=0)), False),
    (SimpleNamespace(get_transaction_status=lambda: 4), True),
    (SimpleNamespace(get_transaction_status=lambda: 0), False),
    (SimpleNamespace(), False),
])
def test_postgresql_failed_transaction_on_both_drivers(raw, failed):
    assert for_vendor("postgresql").in_failed_transaction(raw) is failed


class FakeCursor:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def execute(self, sql: str, params: object = None) -> None:
        self.calls.append((sql, params))

    def fetchone(self) -> tuple[str, str]:
        return ("0", "1s")


def test_postgresql_timeouts_are_read_set_and_put_back():
    backend = for_vendor("postgresql")
    cursor = FakeCursor()
    previous = backend.read_timeouts(cursor)
    backend.write_timeouts(cursor, backend.timeout_values(250))
    backend.write_timeouts(cursor, previous)
    assert previous == ("0", "1s")
    assert [params for _, params in cursor.calls] == [None, ("250ms", "250ms"), ("0", "1s")]
    assert "set_config('statement_timeout', %s, false)" in cursor.calls[1][0]


def test_a_plain_backend_closes_the_connection():
    closed = []
    Backend().close(SimpleNamespace(close=lambda: closed.append(True)))
    assert closed == [True]


@pytest.mark.parametrize(("vendor", "census"), [
    ("postgresql", True), ("sqlite", False), ("mysql", False)])
def test_only_postgresql_monitors_sessions_so_far(vendor, census):
    backend = for_vendor(vendor)
    assert backend.takes_census is census
    if not backend.samples_locks:
        with pytest.raises(MonitorUnavailable, match=f"not available on {backend.vendor}"):
            backend.lock_monitor({}, "app", 1000, 5)


@pytest.mark.parametrize(("vendor", "sql", "prepared", "kind"), [
    ("postgresql", "SET search_path TO x", False, "session-level SET"),
    ("postgresql", "SET LOCAL search_path TO x", False, None),
    ("postgresql", "SELECT pg_advisory_lock(%s)", False, "session advisory lock"),
    ("postgresql", "SELECT pg_advisory_xact_lock(%s)", False, None),
    ("postgresql", "SELECT 1", True, "server-side prepared statement (execute(..., "
                                     "prepare=True))"),
    ("postgresql", "SELECT 1", False, None),
    ("sqlite", "SET search_path TO x", True, None),
    ("mysql", "SET search_path TO x", False, None),
])
def test_session_state_a_transaction_pooler_loses(vendor, sql, prepared, kind):
    found = for_vendor(vendor).pooler_unsafe(sql, prepared)
    assert (found[0] if found else None) == kind


class FakeConnection:
    def __init__(self, rows: list[tuple]) -> None:
        self.rows = rows
        self.calls: list[tuple[str, object]] = []

    def execute(self, sql: str, params: object = None) -> FakeConnection:
        self.calls.append((sql, params))
        return self

    def fetchall(self) -> list[tuple]:
        return self.rows


def test_postgresql_watch_counts_a_wait_only_when_activity_and_blockers_agree():
    from pytest_dbguard.backends.postgresql import Watch

    started = "2026-01-01 00:00:00+00"
    rows = [
        # waiting: a Lock wait event and live blockers, a row lock on a transaction, and the
        # wait began before the sample's activity snapshot
        (10, "active", "Lock", "UPDATE t", 100.5, [11], "transactionid", "ShareLock", None,
         "7", None, None, 0.25, "t", 0, 3, "db", started, True),
        # live blockers but the activity row already shows no lock wait: stale, not waiting
        (11, "active", "Client", "UPDATE t", 100.0, [10], None, None, None, None, None, None,
         None, None, None, None, "db", started, False),
        # a Lock wait event whose blockers are already gone
        (12, "idle in transaction", "Lock", "", None, [], "relation", "AccessShareLock",
         "t", None, None, None, None, None, None, None, "db", started, False),
        # live reads say waiting, but the wait began after the activity snapshot: the text is
        # the statement before it (here the BEGIN), so this sample does not count it
        (13, "active", "Lock", "BEGIN", 100.2, [10], "transactionid", "ShareLock", None,
         "8", None, None, 0.001, "t", 0, 4, "db", started, False),
    ]
    conn = FakeConnection(rows)
    watch = Watch(conn, 150000)
    sampled = {s.pid: s for s in watch.sample([10, 11, 12, 13])}
    assert conn.calls[0][1] == ([10, 11, 12, 13],)
    assert "w.waitstart <= transaction_timestamp()" in conn.calls[0][0]
    assert sampled[10] == SessionSample(
        pid=10, state="active", sql="UPDATE t", statement_start=100.5, blocked_by=(11,),
        waits_for={"locktype": "transactionid", "mode": "ShareLock", "object": "transaction 7",
                   "relation": "t", "row": "(0,3)"},
        wait_s=0.25, database="db", session_start=started)
    assert (sampled[11].blocked_by, sampled[11].waits_for) == ((), None)
    assert (sampled[12].blocked_by, sampled[12].waits_for, sampled[12].sql) == ((), None, None)
    assert sampled[12].statement_start == 0.0
    assert (sampled[13].blocked_by, sampled[13].waits_for) == ((), None)
    # before PostgreSQL 14 pg_locks has no waitstart: the first sample dates a wait
    assert "waitstart" not in Watch(FakeConnection([]), 130000).sql


def test_postgresql_watch_signals_in_one_statement_that_rechecks_the_session():
    from pytest_dbguard.backends.postgresql import Watch

    conn = FakeConnection([(10, True), (11, False)])
    watch = Watch(conn, 150000)
    assert watch.signal(True, [(10, "db", "s1"), (11, "db", "s2")]) == [10]
    sql, params = conn.calls[0]
    assert "pg_terminate_backend(a.pid)" in sql and "a.backend_start = seen.backend_start" in sql
    assert params == ([10, 11], ["db", "db"], ["s1", "s2"])
    watch.signal(False, [(10, "db", "s1")])
    assert "pg_cancel_backend(a.pid)" in conn.calls[1][0]
