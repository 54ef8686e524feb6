"""query_budget marker, --dbguard-max-queries and the dbguard fixture's budget, end to end."""

from __future__ import annotations

import json

BUDGET_TESTS = """
import pytest
from shop.models import Author, Book


@pytest.fixture
def shelf(db):
    author = Author.objects.create(name="Ursula")
    for n in range(4):
        Book.objects.create(title=f"Book {n}", author=author)
    return author


@pytest.mark.query_budget(3)
def test_over_budget(shelf):
    titles = []
    for book in Book.objects.all():
        titles.append(book.author.name)
    assert len(titles) == 4


@pytest.mark.query_budget(1)
def test_within_budget(shelf):
    assert [b.author.name for b in Book.objects.select_related("author")] == ["Ursula"] * 4
"""


def test_budget_fails_with_grouped_message(djproject, backend):
    djproject.write_test(BUDGET_TESTS)
    result = djproject.run("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "[dbguard:budget] query budget exceeded: 5 queries > budget 3 (alias default)" in out
    assert (
        '4× SELECT ... FROM "shop_author" WHERE "shop_author"."id" = %s LIMIT %s  at test_shop.py:18'
        in out
    )
    assert '1× SELECT ... FROM "shop_book"  at test_shop.py:17' in out
