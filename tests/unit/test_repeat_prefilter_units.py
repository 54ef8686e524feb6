"""The repeated-query rules return early when no query shape reaches the threshold
(nplusone.repeats_reach): the edge of that shortcut, exactly at the threshold, must still fire."""

from __future__ import annotations

import pytest

from pytest_dbguard.events import QueryContext, Relation
from pytest_dbguard.rules.duplicate import check_duplicate
from pytest_dbguard.rules.nplusone import check_nplusone, check_nplusone_loop, repeats_reach
from tests.records import RecordBuilder, context

pytestmark = pytest.mark.unit

BOOKS = 'SELECT "id", "author_id" FROM "shop_book"'
AUTHOR = 'SELECT "id", "name" FROM "shop_author" WHERE "id" = %s LIMIT 21'
PRICE = 'SELECT "price" FROM "shop_price" WHERE "book_id" = %s'
OTHER = 'SELECT "id" FROM "shop_shelf"'
LAZY = QueryContext(relation=Relation("forward", "Book", "author", "Author", "shop_book"))


def nplusone_record(loads: int):
    builder = RecordBuilder().query(BOOKS, site="shop/views.py:5")
    for key in range(loads):
        builder.query(AUTHOR, context=LAZY, params=key + 1, extra={"load": 1})
        builder.query(OTHER, site="shop/views.py:30", params=100 + key)  # interleaved
    return builder.build()


def test_an_nplusone_of_exactly_the_threshold_among_other_shapes_fires():
    [finding] = check_nplusone(nplusone_record(3), context())
    assert finding.rule == "nplusone"
    assert finding.evidence["count"] == 3
    assert finding.evidence["site"] == "shop/views.py:10"


def test_one_load_short_of_the_threshold_is_no_nplusone():
    assert list(check_nplusone(nplusone_record(2), context())) == []


def test_the_threshold_option_moves_the_shortcut_too():
    [finding] = check_nplusone(nplusone_record(2), context(nplusone_threshold=2))
    assert finding.evidence["count"] == 2


def loop_record(times: int):
    builder = RecordBuilder().query(BOOKS, site="shop/views.py:5")
    for key in range(times):
        builder.query(PRICE, site="shop/views.py:12", params=key + 1)
    return builder.query(OTHER, site="shop/views.py:30").build()


def test_a_loop_of_exactly_the_threshold_fires():
    [finding] = check_nplusone_loop(loop_record(3), context())
    assert (finding.rule, finding.evidence["count"]) == ("nplusone-loop", 3)
    assert finding.evidence["site"] == "shop/views.py:12"
    assert list(check_nplusone_loop(loop_record(2), context())) == []


def duplicate_record(times: int):
    builder = RecordBuilder()
    for _ in range(times):
        builder.query(BOOKS, site="shop/views.py:5", params=42)
        builder.query(OTHER, site="shop/views.py:30", params=7)
    return builder.build()


def test_a_duplicate_of_exactly_the_threshold_fires_once_per_statement():
    findings = check_duplicate(duplicate_record(3), context())
    assert sorted((f.rule, f.evidence["count"], tuple(f.evidence["sites"]))
                  for f in findings) == [("duplicate", 3, ("shop/views.py:30",)),
                                         ("duplicate", 3, ("shop/views.py:5",))]
    assert list(check_duplicate(duplicate_record(2), context())) == []


@pytest.mark.parametrize(("shapes", "threshold", "expected"), [
    ([], 3, False),
    ([1], 1, True),
    ([1, 2, 3, 4, 5], 3, False),
    ([1, 2, 1, 2, 3], 3, False),  # two repeats, but spread over two shapes
    ([1, 2, 1, 3, 1], 3, True),
    ([1, 1], 2, True),
    ([1, 2], 2, False),
])
def test_repeats_reach_counts_one_shape(shapes, threshold, expected):
    sql = {1: BOOKS, 2: AUTHOR, 3: PRICE, 4: OTHER, 5: 'SELECT 1'}
    builder = RecordBuilder()
    for shape in shapes:
        builder.query(sql[shape])
    if not shapes:
        builder.query(BOOKS, phase="setup")
    assert repeats_reach(builder.build().phase("call"), threshold) is expected
