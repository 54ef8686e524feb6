"""escaped-write on raw psycopg connections and psycopg-pool checkouts (PostgreSQL only)."""

from __future__ import annotations

from pytest_dbguard.rules.escaped import HINT_ESCAPED_RAW
from tests.lifecycle_support import line_of, run_json

RAW = """
import os
import threading

import psycopg
from django.db import connection
from psycopg_pool import ConnectionPool

INSERT = "INSERT INTO shop_author (name) VALUES (%s)"


def dsn():
    base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    return f"{base}/{connection.settings_dict['NAME']}"


def autocommit_insert():
    conn = psycopg.connect(dsn(), autocommit=True)
    conn.execute(INSERT, ("autocommit",))
    conn.close()


def insert_then_commit():
    conn = psycopg.connect(dsn())
    conn.execute("UPDATE shop_author SET name = %s WHERE id = %s", ("x", 0))
    conn.commit()
    conn.close()


def transaction_block():
    conn = psycopg.connect(dsn(), autocommit=True)
    with conn.transaction():
        conn.execute(INSERT, ("in block",))
        with conn.transaction(force_rollback=True):
            conn.execute("DELETE FROM shop_author WHERE id = %s", (0,))
    conn.close()


def commit_refused_in_block():
    conn = psycopg.connect(dsn(), autocommit=True)
    with conn.transaction():
        conn.execute(INSERT, ("kept",))
        try:
            conn.commit()  # psycopg refuses it inside transaction(): the block commits
        except psycopg.ProgrammingError:
            pass
    conn.close()


def with_block():
    with psycopg.connect(dsn()) as conn:
        conn.execute(INSERT, ("with block",))


def pool_checkout():
    with ConnectionPool(dsn(), min_size=1, max_size=1, name="writers") as pool:
        with pool.connection() as conn:
            conn.execute(INSERT, ("pooled",))


def ddl():
    with psycopg.connect(dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE raw_ddl_probe (id int)")
        conn.execute("DROP TABLE raw_ddl_probe")


def in_thread():
    worker = threading.Thread(target=autocommit_insert, name="raw-worker")
    worker.start()
    worker.join()


async def async_with_block():
    async with await psycopg.AsyncConnection.connect(dsn()) as conn:
        await conn.execute(INSERT, ("async",))


def rolled_back():
    conn = psycopg.connect(dsn())
    conn.execute(INSERT, ("undone",))
    conn.rollback()
    conn.close()


class Undo(Exception):
    pass


def block_raises():
    conn = psycopg.connect(dsn(), autocommit=True)
    try:
        with conn.transaction():
            conn.execute(INSERT, ("undone",))
            raise Undo
    except Undo:
        pass
    conn.close()


def never_committed():
    conn = psycopg.connect(dsn())
    conn.execute(INSERT, ("never committed",))
    conn.close()


def reads():
    with psycopg.connect(dsn(), autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM shop_author").fetchone()


def temp_table():
    with psycopg.connect(dsn(), autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE scratch (id int)")
        conn.execute("INSERT INTO scratch (id) VALUES (1)")
        conn.execute("UPDATE pg_temp.scratch SET id = 2")
        conn.execute("DROP TABLE scratch")
"""

TESTS = """
import pytest
from django.test import TestCase, TransactionTestCase

from shop import rawdb


def test_autocommit(db):
    rawdb.autocommit_insert()


def test_commit(db):
    rawdb.insert_then_commit()


def test_transaction_block(db):
    rawdb.transaction_block()


def test_commit_refused_in_block(db):
    rawdb.commit_refused_in_block()


def test_with_block(db):
    rawdb.with_block()


def test_pool(db):
    rawdb.pool_checkout()


def test_ddl(db):
    rawdb.ddl()


def test_thread(db):
    rawdb.in_thread()


@pytest.mark.asyncio
@pytest.mark.django_db
async def test_async(db):
    await rawdb.async_with_block()


class RawInTestCase(TestCase):
    def test_testcase(self):
        rawdb.autocommit_insert()


def test_rolled_back(db):
    rawdb.rolled_back()


def test_block_raises(db):
    rawdb.block_raises()


def test_never_committed(db):
    rawdb.never_committed()


def test_reads(db):
    rawdb.reads()


def test_temp_table(db):
    rawdb.temp_table()


def test_transactional(transactional_db):
    rawdb.autocommit_insert()
    rawdb.with_block()


class RawInTransactionTestCase(TransactionTestCase):
    def test_transaction_testcase(self):
        rawdb.insert_then_commit()
"""

INSERT = "INSERT INTO shop_author(name) VALUES (...)"
AUTOCOMMIT_INSERT = 'conn.execute(INSERT, ("autocommit",))'
ASYNC_INSERT = 'await conn.execute(INSERT, ("async",))'


def at(snippet: str, offset: int = 0) -> str:
    return f"shop/rawdb.py:{line_of(RAW, snippet) + offset}"


def test_raw_psycopg_writes_escape(djproject_pg):
    djproject_pg.write("shop/rawdb.py", RAW)
    djproject_pg.write_test(TESTS)
    result, findings = run_json(djproject_pg)
    result.assert_outcomes(passed=7, failed=10)
    raw, main = "a raw psycopg connection", "thread MainThread"
    autocommit_line = (f"1× {INSERT} at {at(AUTOCOMMIT_INSERT)} on {raw} of {main}, committed "
                       f"at once (autocommit)")
    expected = {
        "test_autocommit": [autocommit_line],
        "test_commit": [f"1× UPDATE shop_author SET name = %s WHERE id = %s at "
                        f"{at('UPDATE shop_author')} on {raw} of {main}, committed by commit()"],
        # the DELETE in the forced-rollback savepoint is undone
        "test_transaction_block": [f"1× {INSERT} at {at('in block')} on {raw} of {main}, "
                                   f"committed when its transaction() block ended"],
        "test_commit_refused_in_block": [
            f"1× {INSERT} at {at('kept')} on {raw} of {main}, committed when its "
            f"transaction() block ended"],
        "test_with_block": [f"1× {INSERT} at {at('with block')} on {raw} of {main}, committed "
                            f"when its `with` block ended"],
        "test_pool": [f"1× {INSERT} at {at('pooled')} on a connection of psycopg-pool 'writers' "
                      f"of {main}, committed when its `with` block ended"],
        "test_ddl": [f"1× CREATE TABLE raw_ddl_probe(id int) at {at('CREATE TABLE')} on {raw} "
                     f"of {main}, committed at once (autocommit)",
                     f"1× DROP TABLE raw_ddl_probe at {at('DROP TABLE raw')} on {raw} of {main}, "
                     f"committed at once (autocommit)"],
        "test_thread": [autocommit_line.replace(main, "thread raw-worker")],
        "test_async": [f"1× {INSERT} at {at(ASYNC_INSERT)} on {raw} of {main}, committed when its "
                       f"`with` block ended"],
        "test_testcase": [autocommit_line],
    }
    escaped = {name: [f for f in found if f["rule"] == "escaped-write"]
               for name, found in findings.items()}
    assert {name for name, found in escaped.items() if found} == set(expected)
    for name, lines in expected.items():
        [finding] = escaped[name]
        n = len(lines)
        assert finding["message"] == (
            f"{n} {'write was' if n == 1 else 'writes were'} committed on another connection "
            f"while this test's changes are rolled back at its end: the rows stay in the "
            f"database and leak into later tests"), name
        assert finding["lines"] == lines, name
        assert finding["hint"] == HINT_ESCAPED_RAW
    for near_miss in ("test_rolled_back", "test_block_raises", "test_never_committed",
                      "test_reads", "test_temp_table", "test_transactional",
                      "test_transaction_testcase"):
        assert findings[near_miss] == [], near_miss
