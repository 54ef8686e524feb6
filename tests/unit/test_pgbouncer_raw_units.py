"""pgbouncer-unsafe over statements of raw psycopg connections (hand-built facts)."""

from __future__ import annotations

import pytest

from pytest_dbguard.facts import PSYCOPG, PsycopgFacts, RawStatement
from pytest_dbguard.rules.shape import check_pgbouncer_unsafe
from tests.records import RecordBuilder, context

pytestmark = pytest.mark.unit

SITE = "shop/rawdb.py:12"


def judge(*statements: RawStatement) -> list[str]:
    record = RecordBuilder().fact(PSYCOPG, PsycopgFacts(statements=statements)).build()
    return [f.message for f in check_pgbouncer_unsafe(record, context())]


def stmt(sql: str, prepared: bool = False, phase: str = "call") -> RawStatement:
    return RawStatement(phase, sql, SITE, "worker", prepared)


@pytest.mark.parametrize(("sql", "prepared", "what"), [
    ("SELECT set_config('app.tenant', 'acme', false)", False, "session-level set_config()"),
    ("  LISTEN order_events", False, "LISTEN"),
    ("PREPARE q AS SELECT 1", False, "server-side prepared statement"),
    ("SELECT 1", True, "server-side prepared statement (execute(..., prepare=True))"),
    ("SET search_path TO tenant_a", False, "session-level SET"),
])
def test_session_state_on_a_raw_connection_fires(sql, prepared, what):
    [message] = judge(stmt(sql, prepared))
    assert message.startswith(f"{what} breaks under transaction pooling: ")
    assert f" at {SITE} on a raw psycopg connection of thread worker; " in message


@pytest.mark.parametrize("sql", [
    "SELECT set_config('app.tenant', 'acme', true)", "SET LOCAL statement_timeout = 1000",
    "SELECT pg_advisory_xact_lock(1)", "SELECT 1",
])
def test_transaction_scoped_state_does_not_fire(sql):
    assert judge(stmt(sql)) == []


def test_only_the_body_is_judged():
    assert judge(stmt("LISTEN order_events", phase="setup")) == []


def test_literals_never_reach_the_message():
    [message] = judge(stmt("SELECT set_config('app.token', 's3cret', false)"))
    assert "s3cret" not in message
