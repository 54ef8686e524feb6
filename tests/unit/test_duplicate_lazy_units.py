"""duplicate inside an N+1: the same related row loaded again; cross-referenced findings."""

from __future__ import annotations

import pytest

from pytest_dbguard.events import QueryContext, Relation
from pytest_dbguard.rules import builtin_registry, evaluate
from pytest_dbguard.rules.duplicate import check_duplicate
from pytest_dbguard.rules.nplusone import check_nplusone
from tests.records import APP_SITE, RecordBuilder, context

pytestmark = pytest.mark.unit

BOOKS = 'SELECT "id", "author_id" FROM "shop_book"'
AUTHOR = 'SELECT "id", "name" FROM "shop_author" WHERE "id" = 1 LIMIT 21'
LAZY = QueryContext(relation=Relation("forward", "Book", "author", "Author", "shop_book"))


def record(params: list[int]):
    builder = RecordBuilder().query(BOOKS, site="shop/views.py:5")
    # every book came from the one BOOKS queryset: load group 1 (see recording.loads)
    for key in params:
        builder.query(AUTHOR, context=LAZY, params=key, extra={"load": 1})
    return builder.build()


def test_the_same_author_loaded_four_times_is_an_nplusone_and_a_duplicate():
    found = record([7, 7, 7, 7])
    [nplusone] = check_nplusone(found, context())
    [duplicate] = check_duplicate(found, context())
    assert nplusone.evidence["lines"][-1] == (
        "4 of them are the same statement with the same parameters: the same row loaded again "
        "(also reported as duplicate)")
    assert duplicate.message == (
        'duplicate query: 4× the same SELECT ... FROM "shop_author" WHERE "id" = %s LIMIT %s '
        f"with the same parameters at {APP_SITE}, by lazy Book.author: the same row loaded "
        "again each time (the N+1 on Book.author is reported as nplusone); keep the object you "
        "already loaded")
    assert duplicate.action == "warn"


def test_different_authors_are_an_nplusone_only():
    found = record([1, 2, 3, 4])
    [nplusone] = check_nplusone(found, context())
    assert not any("same parameters" in line for line in nplusone.evidence["lines"])
    assert list(check_duplicate(found, context())) == []


def test_repeats_below_the_threshold_are_not_duplicates():
    found = record([1, 1, 2, 3])
    assert list(check_duplicate(found, context())) == []
    [nplusone] = check_nplusone(found, context())
    assert not any("same parameters" in line for line in nplusone.evidence["lines"])


def test_the_duplicate_never_fails_the_test_twice():
    registry = builtin_registry()
    actions = {"nplusone": "fail", "duplicate": "fail"}
    findings = evaluate(record([7, 7, 7]), context(), actions, {}, registry=registry)
    assert [(f.rule, f.action) for f in findings] == [("nplusone", "fail"), ("duplicate", "warn")]
