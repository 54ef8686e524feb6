"""open-transaction, swallowed-db-error, async-orm and pool-exhausted end to end."""

from __future__ import annotations

import pytest

from pytest_dbguard.recording.fingerprint import make_shape, short_sql
from pytest_dbguard.rules.async_orm import HINT_ASYNC
from pytest_dbguard.rules.lifecycle import HINT_OPEN_TX
from pytest_dbguard.rules.swallowed import HINT_SWALLOWED
from tests.lifecycle_support import line_of, run_json
from tests.test_restore import RESTORED

# the shape the fingerprinter gives the raw INSERT of register_raw()
RAW_INSERT = short_sql(
    make_shape("INSERT INTO shop_author (id, name) VALUES (%s, 'x')").fingerprint)

SERVICES = """
from django.db import IntegrityError, connection, transaction
from shop.models import Author


def register(pk, name):
    try:
        return Author.objects.create(id=pk, name=name)
    except IntegrityError:
        return None


def register_safely(pk, name):
    try:
        with transaction.atomic():
            return Author.objects.create(id=pk, name=name)
    except IntegrityError:
        return None


def register_raw(pk):
    try:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO shop_author (id, name) VALUES (%s, 'x')", [pk])
    except IntegrityError:
        return None
"""

TX_TESTS = """
import pytest
from django.db import IntegrityError, transaction
from shop.models import Author
from shop.services import register, register_raw, register_safely


@pytest.mark.django_db
def test_swallowed_in_service():
    register(1, "a")
    register(1, "b")


@pytest.mark.django_db
def test_swallowed_raw_in_service():
    register_raw(1)
    register_raw(1)


@pytest.mark.django_db
def test_savepoint_in_service():
    register_safely(1, "a")
    assert register_safely(1, "b") is None
    assert Author.objects.count() == 1


@pytest.mark.django_db
def test_constraint_asserted_by_test():
    Author.objects.create(id=1, name="a")
    with pytest.raises(IntegrityError):
        Author.objects.create(id=1, name="b")


@pytest.mark.django_db
def test_error_propagates():
    Author.objects.create(id=1, name="a")
    Author.objects.create(id=1, name="b")


@pytest.mark.django_db(transaction=True)
def test_autocommit_left_off():
    transaction.set_autocommit(False)
    Author.objects.create(name="a")


@pytest.mark.django_db
def test_nested_atomic():
    with transaction.atomic():
        Author.objects.create(name="a")
        with transaction.atomic():
            Author.objects.create(name="b")
    assert Author.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_autocommit_restored():
    transaction.set_autocommit(False)
    try:
        Author.objects.create(name="a")
        transaction.commit()
    finally:
        transaction.set_autocommit(True)


# last (pytest-django runs transactional tests after the others): the atomic block it leaves
# open would swallow the flush of the tests after it
@pytest.mark.django_db(transaction=True)
def test_atomic_never_exited():
    transaction.atomic().__enter__()
    Author.objects.create(name="a")
"""


def test_transactions(djproject, backend):
    djproject.write("shop/services.py", SERVICES)
    djproject.write_test(TX_TESTS)
    result, findings = run_json(djproject)
    postgres = backend == "postgres"
    # test_error_propagates fails with its own IntegrityError; the raw INSERT error breaks the
    # transaction on PostgreSQL only: SQLite carries on
    result.assert_outcomes(passed=6 if postgres else 7, failed=3 if postgres else 2, errors=2)
    create_line = line_of(SERVICES, "return Author.objects.create(id=pk, name=name)")
    raw_line = line_of(SERVICES, "cursor.execute(")
    unique = ('duplicate key value violates unique constraint "shop_author_pkey"' if postgres
              else "UNIQUE constraint failed: shop_author.id")
    sqlstate = " (SQLSTATE 23505)" if postgres else ""
    reasons = "needs_rollback, the driver reports INERROR" if postgres else "needs_rollback"
    assert findings["test_swallowed_in_service"] == [{
        "rule": "swallowed-db-error",
        "phase": "call",
        "message": f"1 database error was caught inside atomic and the transaction on "
                   f"'default' was left unusable ({reasons}); the next query in it fails",
        "lines": [
            f"IntegrityError{sqlstate}: {unique}",
            f'    from INSERT INTO "shop_author" ("id", "name") VALUES (...) RETURNING '
            f'"shop_author"."id" at shop/services.py:{create_line}; caught and not re-raised '
            f"in register() at shop/services.py:{create_line}",
        ],
        "hint": HINT_SWALLOWED,
    }]
    if postgres:
        assert findings["test_swallowed_raw_in_service"] == [{
            "rule": "swallowed-db-error",
            "phase": "call",
            "message": "1 database error was caught inside atomic and the transaction on "
                       "'default' was left unusable (the driver reports INERROR); the next "
                       "query in it fails",
            "lines": [
                f"IntegrityError{sqlstate}: {unique}",
                f"    from {RAW_INSERT} at "
                f"shop/services.py:{raw_line}; caught and not re-raised in register_raw() at "
                f"shop/services.py:{raw_line}",
            ],
            "hint": HINT_SWALLOWED,
        }]
    else:
        assert findings["test_swallowed_raw_in_service"] == []
    assert findings["test_atomic_never_exited"] == [{
        "rule": "open-transaction",
        "phase": "teardown",
        "message": "1 connection was left inside a transaction",
        "lines": ["Django connection 'default' of the test thread: atomic depth is 1 at the "
                  "end of the test body, 0 when it began: an atomic block was entered and "
                  "never exited", RESTORED],
        "hint": HINT_OPEN_TX,
    }]
    assert findings["test_autocommit_left_off"] == [{
        "rule": "open-transaction",
        "phase": "teardown",
        "message": "1 connection was left inside a transaction",
        "lines": ["Django connection 'default' of the test thread: autocommit is off at the "
                  "end of the test body: transaction.set_autocommit(False) was never undone",
                  RESTORED],
        "hint": HINT_OPEN_TX,
    }]
    for near_miss in ("test_savepoint_in_service", "test_constraint_asserted_by_test",
                      "test_error_propagates", "test_nested_atomic", "test_autocommit_restored"):
        assert findings[near_miss] == [], near_miss
    out = result.stdout.str()
    assert "FAILED test_shop.py::test_error_propagates - django.db.utils.IntegrityError" in out
    assert "FAILED test_shop.py::test_swallowed_in_service - [dbguard:swallowed-db-error]" in out
    assert "ERROR test_shop.py::test_atomic_never_exited - [dbguard:open-transaction]" in out


RAW_TX_TESTS = """
import os

import psycopg
import pytest
from django.db import connection

KEEP = []


def dsn():
    base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    return f"{base}/{connection.settings_dict['NAME']}"


@pytest.mark.django_db
def test_raw_left_in_transaction():
    conn = psycopg.connect(dsn())
    conn.execute("SELECT 1")
    KEEP.append(conn)


@pytest.mark.django_db
def test_raw_committed_and_closed():
    with psycopg.connect(dsn()) as conn:
        conn.execute("SELECT 1")


def test_cleanup():
    for conn in KEEP:
        conn.close()
"""


@pytest.mark.parametrize("backend", ["postgres"])
def test_raw_connection_idle_in_transaction(djproject, backend):
    djproject.write_test(RAW_TX_TESTS)
    result, findings = run_json(djproject)
    result.assert_outcomes(passed=3, errors=1)
    line = line_of(RAW_TX_TESTS, "conn = psycopg.connect(dsn())")
    leak, open_tx = findings["test_raw_left_in_transaction"]
    assert leak["rule"] == "connection-leak"
    assert leak["lines"] == [f"psycopg connection of thread MainThread, backend pid N, idle in "
                             f"transaction: opened at test_shop.py:{line} during call"]
    assert open_tx == {
        "rule": "open-transaction",
        "phase": "teardown",
        "message": "1 connection was left inside a transaction",
        "lines": [f"psycopg connection of thread MainThread, backend pid N is still open and "
                  f"idle in transaction after teardown: opened at test_shop.py:{line} during "
                  f"call"],
        "hint": HINT_OPEN_TX,
    }
    assert findings["test_raw_committed_and_closed"] == []


ASYNC_TESTS = """
import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from django.db import connections
from shop.models import Author


@pytest_asyncio.fixture(autouse=True)
async def close_async_connections():
    yield
    await sync_to_async(connections.close_all)()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_sync_orm_in_async_test():
    Author.objects.count()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_sync_orm_hidden_by_unsafe_flag(monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    for _ in range(2):
        Author.objects.filter(name="x").exists()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_async_orm():
    await Author.objects.acreate(name="x")
    assert await Author.objects.filter(name="x").aexists()
    assert await Author.objects.acount() == 1


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_sync_to_async():
    assert await sync_to_async(Author.objects.count)() == 0
    assert await sync_to_async(Author.objects.count, thread_sensitive=False)() == 0
"""


def test_async_orm(djproject, backend):
    djproject.add_settings(
        'DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test_db.sqlite3")}\n'
        if backend == "sqlite" else "")
    djproject.write_test(ASYNC_TESTS)
    result, findings = run_json(djproject)
    sync_line = line_of(ASYNC_TESTS, "    Author.objects.count()")
    exists_line = line_of(ASYNC_TESTS, 'Author.objects.filter(name="x").exists()')
    assert findings["test_sync_orm_in_async_test"] == [{
        "rule": "async-orm",
        "phase": "call",
        "message": f"the test failed with SynchronousOnlyOperation: sync ORM code was called "
                   f"from async code at test_shop.py:{sync_line}",
        "lines": [],
        "hint": HINT_ASYNC,
    }]
    [unsafe] = findings["test_sync_orm_hidden_by_unsafe_flag"]
    assert unsafe["message"] == (
        "2 queries ran on a thread with a running event loop: sync ORM code inside async code "
        "(DJANGO_ALLOW_ASYNC_UNSAFE is set, so Django did not raise SynchronousOnlyOperation)")
    assert unsafe["lines"][0].startswith("2× SELECT ")
    assert unsafe["lines"][0].endswith(f"  at test_shop.py:{exists_line}")
    assert findings["test_async_orm"] == []
    # thread_sensitive=False runs in the loop's default executor: a leak, not an async-orm
    assert [f["rule"] for f in findings["test_sync_to_async"]] == ["connection-leak"]
    result.assert_outcomes(passed=2, failed=2, errors=1)
    out = result.stdout.str()
    assert "dbguard findings" in out
    assert (f"[dbguard:async-orm] the test failed with SynchronousOnlyOperation: sync ORM code "
            f"was called from async code at test_shop.py:{sync_line}\n    hint: {HINT_ASYNC}"
            in out)


POOL_TESTS = """
import os
import threading

import pytest
from django.db import connection
from psycopg_pool import ConnectionPool, PoolTimeout
from shop.models import Author


def dsn():
    base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    return f"{base}/{connection.settings_dict['NAME']}"


@pytest.mark.django_db
def test_pool_timeout():
    with ConnectionPool(dsn(), min_size=1, max_size=1, name="tiny", timeout=0.2) as pool:
        held = pool.getconn()
        with pytest.raises(PoolTimeout):
            pool.getconn()
        pool.putconn(held)


@pytest.mark.django_db
def test_pool_big_enough():
    with ConnectionPool(dsn(), min_size=1, max_size=2, name="roomy", timeout=2) as pool:
        with pool.connection(), pool.connection():
            pass
"""

FANOUT_TESTS = """
import threading

import pytest
from django.db import connection
from shop.models import Author


def fan_out(n):
    barrier = threading.Barrier(n)

    def job():
        try:
            Author.objects.count()
            barrier.wait(timeout=10)
        finally:
            connection.close()

    threads = [threading.Thread(target=job, name=f"fan-{i}") for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.django_db(transaction=True)
def test_fan_out_wide():
    Author.objects.count()
    fan_out(3)


@pytest.mark.django_db(transaction=True)
def test_fan_out_narrow():
    Author.objects.count()
    fan_out(2)
"""


@pytest.mark.parametrize("backend", ["postgres"])
def test_pool_timeout(djproject, backend):
    djproject.write_test(POOL_TESTS)
    result, findings = run_json(djproject)
    result.assert_outcomes(passed=1, failed=1)
    assert findings["test_pool_timeout"] == [{
        "rule": "pool-exhausted",
        "phase": "call",
        "message": f"pool 'tiny' was exhausted: getconn() timed out after 0.2 s with all 1 "
                   f"connection checked out, at test_shop.py:"
                   f"{line_of(POOL_TESTS, '            pool.getconn()')}",
        "lines": [f"checked out at test_shop.py:{line_of(POOL_TESTS, 'held = pool.getconn()')}"
                  f" and not returned by then"],
        "hint": "return every connection as soon as the work is done (`with pool.connection() "
                "as conn:`), and size the pool for the concurrency the code really has",
    }]
    assert findings["test_pool_big_enough"] == []


def test_max_connections(djproject, backend):
    djproject.add_settings(
        'DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test_db.sqlite3")}\n'
        if backend == "sqlite" else "")
    djproject.write_test(FANOUT_TESTS)
    result, findings = run_json(djproject, "--dbguard-max-connections", "3")
    result.assert_outcomes(passed=1, failed=1)
    vendor = "sqlite" if backend == "sqlite" else "postgresql"
    line = line_of(FANOUT_TESTS, "            Author.objects.count()")
    [finding] = findings["test_fan_out_wide"]
    assert finding["message"] == ("4 connections were open at once, more than "
                                  "--dbguard-max-connections 3; at the peak:")
    assert finding["lines"] == [
        f"default ({vendor}) of the test thread",
        *(f"default ({vendor}) opened by thread fan-{i} at test_shop.py:{line} during call"
          for i in range(3)),
    ]
    assert findings["test_fan_out_narrow"] == []


def test_max_connections_must_be_a_count(djproject):
    djproject.write_test("def test_nothing():\n    pass\n")
    result = djproject.run("--dbguard", "--dbguard-max-connections", "-1")
    assert "dbguard: --dbguard-max-connections must be 0 or more, got -1." in result.stderr.str()
