"""escaped-write end to end: writes other connections commit while the test's changes roll back."""

from __future__ import annotations

from pytest_dbguard.rules.escaped import HINT_ESCAPED
from tests.lifecycle_support import FILE_TEST_DB, line_of, rules_of, run_json

ESCAPED_TESTS = """
import threading

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections, transaction
from django.test import TestCase, TransactionTestCase
from shop.models import Author


def in_thread(work):
    def run():
        try:
            work()
        finally:
            connection.close()

    worker = threading.Thread(target=run, name="import-worker")
    worker.start()
    worker.join()


def create_author():
    Author.objects.create(name="leaked")


def create_in_atomic():
    with transaction.atomic():
        Author.objects.create(name="leaked in atomic")


class Undo(Exception):
    pass


def create_and_roll_back():
    try:
        with transaction.atomic():
            Author.objects.create(name="undone")
            raise Undo
    except Undo:
        pass


def read_authors():
    list(Author.objects.all())


@pytest.mark.django_db
def test_thread_write_escapes():
    in_thread(create_author)


@pytest.mark.django_db
def test_thread_atomic_write_escapes():
    in_thread(create_in_atomic)


@pytest.mark.asyncio
@pytest.mark.django_db
async def test_async_orm_write_escapes():
    await Author.objects.acreate(name="async leaked")
    await sync_to_async(connections.close_all)()


@pytest.mark.asyncio
@pytest.mark.django_db
async def test_sync_to_async_function_write_escapes():
    await sync_to_async(create_author)()
    await sync_to_async(connections.close_all)()


class TestCaseThreadWrite(TestCase):
    def test_testcase_thread_write(self):
        in_thread(create_author)


@pytest.mark.django_db
def test_own_connection_write():
    Author.objects.create(name="mine")


@pytest.mark.django_db
def test_thread_write_rolled_back():
    in_thread(create_and_roll_back)


@pytest.mark.django_db
def test_thread_reads():
    in_thread(read_authors)


@pytest.mark.django_db(transaction=True)
def test_transactional_thread_write():
    in_thread(create_author)


class TransactionTestCaseThreadWrite(TransactionTestCase):
    def test_transaction_testcase_thread_write(self):
        in_thread(create_author)
"""


def _line(n: int, snippet: str, how: str, thread: str = "import-worker") -> str:
    site = f"test_shop.py:{line_of(ESCAPED_TESTS, snippet)}"
    return (f"{n}× INSERT INTO \"shop_author\" (\"name\") VALUES (...) RETURNING "
            f"\"shop_author\".\"id\" at {site} on Django connection 'default' of thread "
            f"{thread}, {how}")


def test_escaped_writes(djproject, backend):
    djproject.add_settings(FILE_TEST_DB)
    djproject.write_test(ESCAPED_TESTS)
    result, findings = run_json(djproject)
    result.assert_outcomes(passed=5, failed=5)
    message = ("1 write was committed on another connection while this test's changes are "
               "rolled back at its end: the rows stay in the database and leak into later tests")
    autocommit = "committed at once (autocommit)"
    expected = {
        "test_thread_write_escapes": _line(1, 'Author.objects.create(name="leaked")', autocommit),
        "test_thread_atomic_write_escapes": _line(
            1, 'Author.objects.create(name="leaked in atomic")',
            "committed when its atomic block ended"),
        # asgiref runs the write in its executor thread: the site is the line that awaited it
        "test_async_orm_write_escapes": _line(
            1, 'await Author.objects.acreate(name="async leaked")', autocommit,
            thread="ThreadPoolExecutor-0_0"),
        # code handed to sync_to_async keeps its own line
        "test_sync_to_async_function_write_escapes": _line(
            1, 'Author.objects.create(name="leaked")', autocommit,
            thread="ThreadPoolExecutor-0_0"),
        "test_testcase_thread_write": _line(1, 'Author.objects.create(name="leaked")', autocommit),
    }
    failing = {name for name, found in findings.items() if "escaped-write" in rules_of(
        findings, name)}
    assert failing == set(expected)
    for name, line in expected.items():
        [finding] = [f for f in findings[name] if f["rule"] == "escaped-write"]
        assert finding["message"] == message, name
        assert finding["lines"] == [line], name
        assert finding["hint"] == HINT_ESCAPED
    out = result.stdout.str()
    assert "FAILED test_shop.py::TestCaseThreadWrite::test_testcase_thread_write" in out
    assert f"[dbguard:escaped-write] {message}" in out
    for near_miss in ("test_own_connection_write", "test_thread_write_rolled_back",
                      "test_thread_reads", "test_transactional_thread_write",
                      "test_transaction_testcase_thread_write"):
        assert findings[near_miss] == [], near_miss
