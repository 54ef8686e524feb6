"""pgbouncer-unsafe on raw psycopg connections and pool checkouts (PostgreSQL only)."""

from __future__ import annotations

import pytest

from tests.lifecycle_support import line_of

RAW = """
import os

import psycopg
from django.db import connection
from psycopg_pool import ConnectionPool


def dsn():
    base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    return f"{base}/{connection.settings_dict['NAME']}"


def session_state():
    with psycopg.connect(dsn(), autocommit=True) as conn:
        conn.execute("SELECT set_config('app.tenant', 'acme', false)")
        conn.execute("LISTEN order_events")
        conn.execute("SELECT 1", prepare=True)
        with conn.cursor() as cursor:
            cursor.execute("PREPARE by_id AS SELECT 1")


def transaction_state():
    with psycopg.connect(dsn()) as conn:
        with conn.transaction():
            conn.execute("SELECT set_config('app.tenant', 'acme', true)")
            conn.execute("SET LOCAL statement_timeout = 1000")
            conn.execute("SELECT 1")


def pooled_session_state():
    with ConnectionPool(dsn(), min_size=1, max_size=1, name="tenants") as pool:
        with pool.connection() as conn:
            conn.execute("SELECT set_config('app.tenant', 'acme', false)")
"""

TESTS = """
from shop import rawdb


def test_raw_session_state(db):
    rawdb.session_state()


def test_raw_transaction_state(db):
    rawdb.transaction_state()


def test_pooled_session_state(db):
    rawdb.pooled_session_state()
"""


@pytest.mark.parametrize("backend", ["postgres"])
def test_pgbouncer_unsafe_on_raw_connections(djproject, backend):
    djproject.write("shop/rawdb.py", RAW)
    djproject.write_test(TESTS)
    result = djproject.run("--dbguard", "--dbguard-rule", "pgbouncer-unsafe=fail",
                           "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()

    def at(snippet: str) -> str:
        return f"shop/rawdb.py:{line_of(RAW, snippet)}"

    raw = "on a raw psycopg connection of thread MainThread"
    first_set_config = at("'acme', false")
    expected = [
        f"session-level set_config() breaks under transaction pooling: SELECT set_config(%s, "
        f"%s, FALSE) at {first_set_config} {raw}; pass is_local => true inside a transaction",
        f"LISTEN breaks under transaction pooling: LISTEN order_events at "
        f"{at('LISTEN order_events')} {raw}; run LISTEN on a dedicated direct connection",
        f"server-side prepared statement (execute(..., prepare=True)) breaks under transaction "
        f"pooling: SELECT %s at {at('prepare=True')} {raw}; leave prepare to psycopg's "
        f"prepare_threshold",
        f"server-side prepared statement breaks under transaction pooling: PREPARE by_id AS "
        f"SELECT %s at {at('PREPARE by_id')} {raw}; do not PREPARE statements by hand",
        f"session-level set_config() breaks under transaction pooling: SELECT set_config(%s, "
        f"%s, FALSE) at shop/rawdb.py:{line_of(RAW, 'with pool.connection()') + 1} {raw}",
    ]
    for text in expected:
        assert f"[dbguard:pgbouncer-unsafe] {text}" in out, text
    assert "pgbouncer-unsafe: 5 fail" in out
    assert "FAILED test_shop.py::test_raw_session_state" in out
    assert "FAILED test_shop.py::test_pooled_session_state" in out
    # SET LOCAL and set_config(..., true) inside a transaction are safe
    assert "FAILED test_shop.py::test_raw_transaction_state" not in out
