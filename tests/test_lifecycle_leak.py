"""connection-leak end to end: threads, executors, async ORM, raw psycopg, pools, the PG census."""

from __future__ import annotations

import pytest

from pytest_dbguard.rules.lifecycle import (
    HINT_ASYNC_EXECUTOR,
    HINT_CHECKOUT,
    HINT_POOL,
    HINT_RAW,
    HINT_THREAD,
    HINT_UNHOOKED,
)
from tests.lifecycle_support import FILE_TEST_DB, line_of, mask, rules_of, run_json

THREAD_TESTS = """
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import close_old_connections, connection
from shop.models import Author


def count_authors():
    return Author.objects.count()


def count_and_close():
    try:
        return Author.objects.count()
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_thread_leaks():
    worker = threading.Thread(target=count_authors, name="report-worker")
    worker.start()
    worker.join()


@pytest.mark.django_db(transaction=True)
def test_thread_closes():
    worker = threading.Thread(target=count_and_close, name="tidy-worker")
    worker.start()
    worker.join()


@pytest.mark.django_db(transaction=True)
def test_executor_leaks():
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pool") as executor:
        assert executor.submit(count_authors).result() == 0


@pytest.mark.django_db(transaction=True)
def test_executor_closes():
    def job():
        try:
            return Author.objects.count()
        finally:
            close_old_connections()
            connection.close()

    with ThreadPoolExecutor(max_workers=2) as executor:
        assert [f.result() for f in [executor.submit(job) for _ in range(2)]] == [0, 0]


@pytest.mark.django_db
def test_main_thread_connection():
    Author.objects.create(name="main")
    assert Author.objects.count() == 1


def test_live_server_threads(live_server):
    from urllib.request import urlopen

    assert urlopen(live_server.url + "/books/").status == 200
"""


def test_thread_connections(djproject, backend):
    djproject.add_settings(FILE_TEST_DB + 'STATIC_URL = "/static/"\n')
    djproject.write_test(THREAD_TESTS)
    result, findings = run_json(djproject)
    result.assert_outcomes(passed=6, errors=2)
    vendor = "sqlite" if backend == "sqlite" else "postgresql"
    pid = ", backend pid N" if backend == "postgres" else ""
    count_line = line_of(THREAD_TESTS, "    return Author.objects.count()")
    assert findings["test_thread_leaks"] == [{
        "rule": "connection-leak",
        "phase": "teardown",
        "message": "1 connection opened by this test is still open after teardown",
        "lines": [f"Django connection 'default' ({vendor}) of thread report-worker (exited)"
                  f"{pid}, idle: opened at test_shop.py:{count_line} during call"],
        "hint": HINT_THREAD,
    }]
    assert findings["test_executor_leaks"] == [{
        "rule": "connection-leak",
        "phase": "teardown",
        "message": "1 connection opened by this test is still open after teardown",
        "lines": [f"Django connection 'default' ({vendor}) of thread pool_0 (exited)"
                  f"{pid}, idle: opened at test_shop.py:{count_line} during call"],
        "hint": HINT_THREAD,
    }]
    for near_miss in ("test_thread_closes", "test_executor_closes", "test_main_thread_connection",
                      "test_live_server_threads"):
        assert findings[near_miss] == [], near_miss
    out = mask(result.stdout.str())
    assert "ERROR at teardown of test_thread_leaks" in out
    assert (f"[dbguard:connection-leak] 1 connection opened by this test is still open after "
            f"teardown\n    Django connection 'default' ({vendor}) of thread report-worker "
            f"(exited){pid}, idle: opened at test_shop.py:{count_line} during call\n    hint: "
            f"{HINT_THREAD}") in out
    # the leaked connection of the exited thread was closed after the report: on PostgreSQL
    # pytest-django can drop the test database (it could not while the backend was there)
    assert "is being accessed by other users" not in out


def test_persistent_main_thread_connection_is_not_a_leak(djproject, backend):
    djproject.add_settings('DATABASES["default"]["CONN_MAX_AGE"] = 600\n')
    djproject.write_test("""
        import pytest
        from shop.models import Author

        @pytest.mark.django_db(transaction=True)
        def test_one():
            Author.objects.create(name="a")

        @pytest.mark.django_db(transaction=True)
        def test_two():
            assert Author.objects.count() == 0
    """)
    result, findings = run_json(djproject)
    result.assert_outcomes(passed=2)
    assert findings == {"test_one": [], "test_two": []}


ASYNC_TESTS = """
import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from django.db import connections
from shop.models import Author


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_async_orm_leaves_executor_connection():
    await Author.objects.acreate(name="a")
    assert await Author.objects.acount() == 1


class TestClosingAfterAsync:
    @pytest_asyncio.fixture(autouse=True)
    async def close_async_connections(self):
        yield
        await sync_to_async(connections.close_all)()

    @pytest.mark.asyncio
    @pytest.mark.django_db(transaction=True)
    async def test_async_orm_closed(self):
        await Author.objects.acreate(name="b")
        assert [a.name async for a in Author.objects.all()] == ["b"]
        assert (await Author.objects.aget(name="b")).name == "b"
"""


def test_async_orm_executor_connection(djproject, backend):
    djproject.add_settings(FILE_TEST_DB)
    djproject.write_test(ASYNC_TESTS)
    result, findings = run_json(djproject)
    result.assert_outcomes(passed=2, errors=1)
    vendor = "sqlite" if backend == "sqlite" else "postgresql"
    pid = ", backend pid N" if backend == "postgres" else ""
    [finding] = findings["test_async_orm_leaves_executor_connection"]
    assert finding["rule"] == "connection-leak"
    assert finding["lines"] == [
        f"Django connection 'default' ({vendor}) of thread ThreadPoolExecutor-0_0 (still "
        f"running){pid}, idle: opened by sync_to_async code (Django's async ORM) during call"
    ]
    assert finding["hint"] == HINT_ASYNC_EXECUTOR
    assert findings["test_async_orm_closed"] == []


RAW_TESTS = """
import os

import psycopg
import pytest
from django.db import connection
from psycopg_pool import ConnectionPool


def dsn():
    base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    return f"{base}/{connection.settings_dict['NAME']}"


KEEP = []


@pytest.mark.django_db
def test_raw_connection_leaks():
    conn = psycopg.connect(dsn(), autocommit=True)
    conn.execute("SELECT 1")
    KEEP.append(conn)


@pytest.mark.django_db
def test_raw_connection_closed_by_with():
    with psycopg.connect(dsn()) as conn:
        conn.execute("SELECT 1")


@pytest.mark.django_db
def test_pool_checkout_not_returned():
    with ConnectionPool(dsn(), min_size=1, max_size=2, name="orders") as pool:
        KEEP.append(pool.getconn())


@pytest.mark.django_db
def test_pool_left_open():
    pool = ConnectionPool(dsn(), min_size=1, max_size=1, name="reports", open=True)
    with pool.connection() as conn:
        conn.execute("SELECT 1")
    KEEP.append(pool)


@pytest.mark.django_db
def test_pool_used_properly():
    with ConnectionPool(dsn(), min_size=1, max_size=2, name="fine") as pool:
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        conn = pool.getconn()
        pool.putconn(conn)


@pytest.mark.django_db
def test_unhooked_driver():
    KEEP.append(psycopg.pq.PGconn.connect(dsn().encode()))


@pytest.mark.django_db
def test_unhooked_driver_closed():
    pgconn = psycopg.pq.PGconn.connect(dsn().encode())
    pgconn.finish()


def test_teardown_closes_them_all():
    for thing in KEEP:
        (thing.finish if isinstance(thing, psycopg.pq.PGconn) else thing.close)()
"""


@pytest.mark.parametrize("backend", ["postgres"])
def test_raw_psycopg_pools_and_census(djproject, backend):
    djproject.write_test(RAW_TESTS)
    result, findings = run_json(djproject)
    result.assert_outcomes(passed=8, errors=4)
    raw_line = line_of(RAW_TESTS, "conn = psycopg.connect(dsn(), autocommit")
    pool_line = line_of(RAW_TESTS, 'name="reports"')
    assert findings["test_raw_connection_leaks"] == [{
        "rule": "connection-leak",
        "phase": "teardown",
        "message": "1 connection opened by this test is still open after teardown",
        "lines": ["psycopg connection of thread MainThread, backend pid N, idle: "
                  f"opened at test_shop.py:{raw_line} during call"],
        "hint": HINT_RAW,
    }]
    assert findings["test_pool_checkout_not_returned"] == [{
        "rule": "connection-leak",
        "phase": "teardown",
        "message": "1 connection opened by this test is still open after teardown",
        "lines": ["connection of pool 'orders', backend pid N checked out at "
                  f"test_shop.py:{line_of(RAW_TESTS, 'KEEP.append(pool.getconn())')} "
                  "during call by thread MainThread and never returned"],
        "hint": HINT_CHECKOUT,
    }]
    assert findings["test_pool_left_open"] == [{
        "rule": "connection-leak",
        "phase": "teardown",
        "message": "1 connection opened by this test is still open after teardown",
        "lines": [f"pool 'reports' opened at test_shop.py:{pool_line} during call is still "
                  "open"],
        "hint": HINT_POOL,
    }]
    assert findings["test_unhooked_driver"] == [{
        "rule": "connection-leak",
        "phase": "teardown",
        "message": "1 connection opened by this test is still open after teardown",
        "lines": ["PostgreSQL backend pid N on database TEST_DB (idle) connected during the "
                  "test and is still there; no driver dbguard hooks opened it"],
        "hint": HINT_UNHOOKED,
    }]
    for near_miss in ("test_raw_connection_closed_by_with", "test_pool_used_properly",
                      "test_unhooked_driver_closed", "test_teardown_closes_them_all"):
        assert findings[near_miss] == [], near_miss


def test_leak_can_be_allowed_with_a_reason(djproject, backend):
    djproject.add_settings(FILE_TEST_DB)
    djproject.write_test("""
        import threading
        import pytest
        from shop.models import Author

        @pytest.mark.dbguard_allow("connection-leak", reason="the worker pool lives all session")
        @pytest.mark.django_db(transaction=True)
        def test_allowed():
            worker = threading.Thread(target=Author.objects.count)
            worker.start()
            worker.join()
    """)
    result, findings = run_json(djproject)
    result.assert_outcomes(passed=1)
    assert rules_of(findings, "test_allowed") == ["connection-leak"]
