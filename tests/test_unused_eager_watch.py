"""unused-eager-load: the edges of watching only the descriptors whose paths nobody read yet.

A relation is watched from the first eager load that marks it until every path it was marked
with is read, or the test body ends; a path read once is not marked again. So: a path read in
one test, or on one line, must not hide an unread path of the same relation elsewhere.
"""

from __future__ import annotations

import json

RULE = "unused-eager-load"

SERVICES = """
from shop.models import Book


def read_authors():
    return [b.author.name for b in Book.objects.select_related("author")]


def titles():
    return [b.title for b in Book.objects.select_related("author")]


def twice_read_once(read):
    out = []
    for _ in range(2):
        books = list(Book.objects.select_related("author"))
        out.append([b.author.name if read else b.title for b in books])
        read = not read
    return out
"""

TESTS = """
import pytest
from shop import services
from shop.models import Author, Book


@pytest.fixture
def books(db):
    ann = Author.objects.create(name="Ann")
    for title in ("A", "B", "C"):
        Book.objects.create(title=title, author=ann)


def test_1_read_here(books):
    assert services.read_authors() == ["Ann"] * 3


def test_2_then_unread_in_the_next_test(books):
    assert services.titles() == ["A", "B", "C"]


def test_3_read_then_unread_on_another_line(books):
    services.read_authors()
    services.titles()


def test_4_unread_then_read_on_another_line(books):
    services.titles()
    services.read_authors()


def test_5_one_line_read_in_its_first_run_only(books):
    services.twice_read_once(True)


def test_6_one_line_read_in_its_second_run_only(books):
    services.twice_read_once(False)
"""


def _line(anchor: str) -> int:
    at = SERVICES.index("_related(", SERVICES.index(anchor))
    return SERVICES[:at].count("\n") + 1


def test_a_read_path_hides_no_other_unread_path(djproject):
    djproject.write("shop/services.py", SERVICES)
    djproject.write_test(TESTS)
    report = djproject.path / "dbguard.json"
    result = djproject.run("--dbguard", "-p", "no:randomly", "--dbguard-json", str(report))
    result.assert_outcomes(passed=6)
    data = json.loads(report.read_text())
    found = {entry["nodeid"].split("::")[-1]: [(f["evidence"]["site"], f["evidence"]["count"])
                                               for f in entry["findings"] if f["rule"] == RULE]
             for entry in data["tests"]}
    unread = [(f"shop/services.py:{_line('def titles')}", 3)]
    assert found == {
        "test_1_read_here": [],
        "test_2_then_unread_in_the_next_test": unread,
        "test_3_read_then_unread_on_another_line": unread,
        "test_4_unread_then_read_on_another_line": unread,
        # one line is one path: read in either run of the line, it was read
        "test_5_one_line_read_in_its_first_run_only": [],
        "test_6_one_line_read_in_its_second_run_only": [],
    }
