"""Stress mode names the tests it stressed and says why it left each other database test."""

from __future__ import annotations

from pytest_dbguard.stress.scope import UNITTEST_REASON, WRAPPED_REASON

UNITTEST_ONLY = """
from django.test import TestCase, TransactionTestCase
from shop.models import Author


class TestShelf(TestCase):
    def test_count(self):
        self.assertEqual(Author.objects.count(), 0)


class TestRestock(TransactionTestCase):
    def test_create(self):
        Author.objects.create(name="a")
        self.assertEqual(Author.objects.count(), 1)
"""

MIXED = """
import pytest
from shop.models import Author


@pytest.mark.django_db(transaction=True)
def test_transactional():
    Author.objects.exists()


@pytest.mark.django_db
def test_wrapped():
    Author.objects.exists()


def test_no_database():
    pass
"""


def test_unittest_only_suite_says_why_nothing_was_stressed(djproject):
    djproject.write_test(UNITTEST_ONLY)
    result = djproject.run("--dbguard-stress", "--dbguard-stress-scope=all", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert ("stress mode stressed no test: no selected test uses a transactional database "
            "(transactional_db or @pytest.mark.django_db(transaction=True)).") in out
    assert "stress mode could not stress 2 database test(s):" in out
    for nodeid in ("test_shop.py::TestRestock::test_create", "test_shop.py::TestShelf::test_count"):
        assert f"  {nodeid}: {UNITTEST_REASON}" in out


def test_mixed_suite_lists_stressed_and_left_tests(djproject):
    djproject.write_test(MIXED)
    result = djproject.run("--dbguard-stress=2", "--dbguard-stress-scope=all", "-n", "2")
    result.assert_outcomes(passed=3)
    out = result.stdout.str()
    assert "stress mode stressed 1 test(s): test_shop.py::test_transactional." in out
    assert "stress mode could not stress 1 database test(s):" in out
    assert f"  test_shop.py::test_wrapped: {WRAPPED_REASON}" in out
    assert "test_no_database:" not in out


def test_marked_scope_with_no_marker_says_so(djproject):
    djproject.write_test(MIXED)
    result = djproject.run("--dbguard", "--dbguard-stress")
    result.assert_outcomes(passed=3)
    assert "stress mode stressed no test: no selected test has @pytest.mark.stress." in (
        result.stdout.str())
