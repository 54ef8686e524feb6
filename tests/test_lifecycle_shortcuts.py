"""The lifecycle probes skip work when nothing happened: the edges of those shortcuts must fire.

A transaction opened without any SQL (autocommit switched off, an atomic block entered by hand)
changes no row and fires no commit, so only the connection's own state shows it; a test with
no query at all, or whose body leaves things as its set-up found them, is the near miss. Tests
run one after another so that the shared (cached) connection states of earlier tests are
reused by later ones.
"""

from __future__ import annotations

from pytest_dbguard.rules.lifecycle import HINT_OPEN_TX
from tests.lifecycle_support import run_json
from tests.test_restore import RESTORED

SHORTCUT_TESTS = """
import pytest
from django.db import connection, transaction
from shop.models import Author


@pytest.mark.django_db(transaction=True)
def test_first_plain():
    assert Author.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_autocommit_off_without_query():
    connection.ensure_connection()
    transaction.set_autocommit(False)


@pytest.mark.django_db(transaction=True)
def test_same_state_as_the_first():
    assert Author.objects.count() == 0


@pytest.mark.django_db
def test_atomic_entered_without_query():
    transaction.atomic().__enter__()


@pytest.mark.django_db
def test_no_query_at_all():
    pass


def test_without_database():
    pass
"""


def test_transactions_opened_without_sql_are_found(djproject, backend):
    djproject.write_test(SHORTCUT_TESTS)
    result, findings = run_json(djproject)
    result.assert_outcomes(passed=6, errors=2)
    assert findings["test_autocommit_off_without_query"] == [{
        "rule": "open-transaction",
        "phase": "teardown",
        "message": "1 connection was left inside a transaction",
        "lines": ["Django connection 'default' of the test thread: autocommit is off at the "
                  "end of the test body: transaction.set_autocommit(False) was never undone",
                  RESTORED],
        "hint": HINT_OPEN_TX,
    }]
    assert findings["test_atomic_entered_without_query"] == [{
        "rule": "open-transaction",
        "phase": "teardown",
        "message": "1 connection was left inside a transaction",
        "lines": ["Django connection 'default' of the test thread: atomic depth is 2 at the "
                  "end of the test body, 1 when it began: an atomic block was entered and "
                  "never exited",
                  "dbguard closed the 1 atomic block(s) the test left open (the enclosing "
                  "transaction rolls back) on 'default' so that the next test starts clean"],
        "hint": HINT_OPEN_TX,
    }]
    for near_miss in ("test_first_plain", "test_same_state_as_the_first",
                      "test_no_query_at_all", "test_without_database"):
        assert findings[near_miss] == [], near_miss
