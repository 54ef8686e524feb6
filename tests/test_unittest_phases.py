"""unittest set-up is set-up: setUp/_pre_setup and tearDown/flush never count as the body."""

from __future__ import annotations

import json

TESTS = '''
from django.test import TestCase, TransactionTestCase

from shop.models import Author, Book


def describe(books):
    return [b.author.name for b in books]


class ShelfTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.house = [Author.objects.create(name=f"House {i}") for i in range(3)]

    def setUp(self):
        self.books = [Book.objects.create(title=f"B{i}", author=Author.objects.create(name=str(i)))
                      for i in range(4)]

    def tearDown(self):
        for author in Author.objects.all():
            author.name

    def test_small_body(self):
        self.assertEqual(len(describe(self.books)), 4)

    def test_big_body(self):
        for book in self.books:
            Book.objects.filter(pk=book.pk).update(title="x")


class FlushedTests(TransactionTestCase):
    def setUp(self):
        for i in range(4):
            Author.objects.create(name=str(i))

    def test_count(self):
        self.assertEqual(Author.objects.count(), 4)
'''


def test_setup_and_teardown_are_not_charged_to_the_body(djproject, backend):
    djproject.write_test(TESTS)
    result = djproject.run("--dbguard", "--dbguard-max-queries", "3", "--dbguard-slow-ms", "0.0001",
                           "--dbguard-json", "report.json", "-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "FAILED test_shop.py::ShelfTests::test_big_body - [dbguard:budget]" in out
    report = json.loads((djproject.path / "report.json").read_text())
    tests = {t["nodeid"].split("::", 1)[1]: t for t in report["tests"]}
    small = tests["ShelfTests::test_small_body"]["queries"]
    assert small["call"] == 0  # the authors came with the books created in setUp... lazily
    assert small["setup"] >= 8  # two creates per book in setUp
    assert small["teardown"] >= 1  # tearDown's loop
    assert tests["ShelfTests::test_big_body"]["queries"]["call"] == 4
    assert tests["FlushedTests::test_count"]["queries"]["call"] == 1
    slow = [f for t in report["tests"] for f in t["findings"] if f["rule"] == "slow-query"]
    assert slow, "the body's own queries are still slow at 0.0001 ms"
    for finding in slow:
        assert "test_shop.py:" in finding["message"], finding["message"]
        for harness in ("SAVEPOINT", "TRUNCATE", "DELETE FROM", "SET CONSTRAINTS",
                        "unknown call site"):
            assert harness not in finding["message"], finding["message"]
    rules = {f["rule"] for t in report["tests"] for f in t["findings"]}
    assert "nplusone" not in rules and "nplusone-loop" not in rules
    assert "duplicate" not in rules
