"""duplicate inside an N+1 end to end: one author loaded again for each of its books."""

from __future__ import annotations

import json

SERVICES = '''
from shop.models import Book


def titles_with_authors():
    return [f"{b.title} by {b.author.name}" for b in Book.objects.all()]
'''

TESTS = '''
import pytest
from shop import services
from shop.models import Author, Book


@pytest.fixture
def one_author(db):
    author = Author.objects.create(name="Prolific")
    for i in range(4):
        Book.objects.create(title=f"Book {i}", author=author)


@pytest.fixture
def four_authors(db):
    for i in range(4):
        Book.objects.create(title=f"Book {i}", author=Author.objects.create(name=f"A{i}"))


def test_same_author_each_time(one_author):
    assert len(services.titles_with_authors()) == 4


def test_a_new_author_each_time(four_authors):
    assert len(services.titles_with_authors()) == 4
'''

SQL = 'SELECT ... FROM "shop_author" WHERE "shop_author"."id" = %s LIMIT %s'


def test_duplicate_reported_inside_an_nplusone(djproject, backend):
    djproject.write("shop/services.py", SERVICES)
    djproject.write_test(TESTS)
    report = djproject.path / "dbguard.json"
    # duplicate set to fail: inside an N+1 it still only warns, the nplusone fails the test
    result = djproject.run("--dbguard", "-p", "no:randomly", "--dbguard-rule", "duplicate=fail",
                           "--dbguard-json", str(report))
    result.assert_outcomes(failed=2)
    entries = {e["nodeid"].split("::")[-1]: e["findings"]
               for e in json.loads(report.read_text())["tests"]}
    same = entries["test_same_author_each_time"]
    assert [(f["rule"], f["action"]) for f in same] == [("nplusone", "fail"), ("duplicate", "warn")]
    assert same[0]["evidence"]["lines"][-1] == (
        "4 of them are the same statement with the same parameters: the same row loaded again "
        "(also reported as duplicate)")
    assert same[1]["message"] == (
        f"duplicate query: 4× the same {SQL} with the same parameters at shop/services.py:6, by "
        f"lazy Book.author: the same row loaded again each time (the N+1 on Book.author is "
        f"reported as nplusone); keep the object you already loaded")
    other = entries["test_a_new_author_each_time"]
    assert [f["rule"] for f in other] == ["nplusone"]
    assert not any("same parameters" in line for line in other[0]["evidence"]["lines"])
    out = result.stdout.str()
    assert "    duplicate: 1 warn\n" in out and "    nplusone: 2 fail\n" in out
