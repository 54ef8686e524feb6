"""One small suite with every kind of report content, shared by tests/test_reports_*.py.

`run_scenario(djproject, *args)` records a baseline, grows one test's queries, and reruns with
`args` (report options): the second run has a budget failure, a regression, an allowed
regression, a new test and a test whose name needs escaping in Markdown and HTML.
"""

from __future__ import annotations

from typing import Any

SUITE = """
import pytest
from shop.models import Author, Book


@pytest.fixture
def shelf(db):
    author = Author.objects.create(name="Ursula")
    for n in range(4):
        Book.objects.create(title=f"Book {n}", author=author)
    return author


@pytest.mark.query_budget(2)
def test_over_budget(shelf):
    names = [book.author.name for book in Book.objects.all()]
    assert names == ["Ursula"] * 4


def test_grows(shelf):
    assert Book.objects.count() == 4
GROWS


@pytest.mark.dbguard_allow("regression", reason="warm-up query, tracked in PR 12")
def test_allowed(shelf):
    assert Author.objects.count() == 1
ALLOWED


@pytest.mark.parametrize("label", ["<b>|x`y"])
def test_odd_name(shelf, label):
    assert len(list(Book.objects.select_related("author"))) == 4
NEW
"""

# line numbers in the module written by write_suite (it starts with an empty line)
BUDGET_SITE = "test_shop.py:16"
GROWS_SITE = "test_shop.py:22"
ODD_NODEID = "test_shop.py::test_odd_name[<b>|x`y]"


def write_suite(djproject: Any, grown: bool) -> None:
    source = SUITE.replace(
        "GROWS", "    assert Author.objects.get(pk=shelf.pk).name == 'Ursula'" if grown else "")
    source = source.replace("ALLOWED", "    Author.objects.first()" if grown else "")
    source = source.replace("NEW", "\n\ndef test_new(db):\n    assert not Book.objects.exists()"
                            if grown else "")
    djproject.write_test(source)


def run_scenario(djproject: Any, *args: str) -> Any:
    """Baseline on the first version, then the grown version with `args`; returns its result."""
    write_suite(djproject, grown=False)
    djproject.run("--dbguard-baseline", "base.json", "--dbguard-baseline-update"
                  ).assert_outcomes(passed=3, failed=1)
    write_suite(djproject, grown=True)
    result = djproject.run("--dbguard", "--dbguard-baseline", "base.json", *args)
    result.assert_outcomes(passed=3, failed=2)
    return result
