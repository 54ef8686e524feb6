"""unused-eager-load over hand-built facts, and the probe's read markers without a database."""

from __future__ import annotations

import copy
import pickle

import pytest

from pytest_dbguard.events import CallSite
from pytest_dbguard.facts import EAGER_LOADS, EagerLoad
from pytest_dbguard.recording.eager_marks import ATTR, LOCAL, EagerPath, WatchedList, mark
from pytest_dbguard.rules.eager import check_unused_eager_load
from tests.records import RecordBuilder, context

pytestmark = pytest.mark.unit

VIEW = CallSite("shop/views.py", 12, "book_list")


def load(**kwargs) -> EagerLoad:
    values = dict(model="Book", holder="Book", method="select_related", path="author",
                  to_attr=None, site=VIEW, evaluations=1, rows=20, loaded=20, used=False,
                  forward=True)
    values.update(kwargs)
    return EagerLoad(**values)


def judge(*loads: EagerLoad):
    record = (RecordBuilder().query('SELECT "id" FROM "shop_book"')
              .fact(EAGER_LOADS, tuple(loads)).build())
    return list(check_unused_eager_load(record, context()))


def test_an_unread_select_related_field_names_queryset_field_and_site():
    [finding] = judge(load())
    assert finding.rule == "unused-eager-load"
    assert finding.message == ('unused eager load: Book select_related("author") at '
                               "shop/views.py:12 — author never read on 20 Book rows")
    assert finding.hint == ('drop "author" from select_related(): the join and its columns are '
                            "loaded for nothing; book.author_id, the key alone, is on the row "
                            "without it")
    assert finding.evidence["site_key"] == "shop/views.py::book_list"
    assert finding.evidence["lines"] == ["in the test body"]


def test_a_read_path_rows_without_related_objects_and_no_rows_never_fire():
    assert judge(load(used=True), load(loaded=0), load(rows=0, loaded=0)) == []


def test_querysets_of_the_tests_own_code_are_left_alone():
    assert judge(load(site=CallSite("tests/test_books.py", 8, "test_x"))) == []
    assert judge(load(site=CallSite("conftest.py", 8, "books"))) == []


def test_prefetch_lookups_nested_levels_and_to_attr():
    nested = load(model="Author", holder="Book", method="prefetch_related",
                  path="books__tags", rows=3, loaded=7, forward=False, unit="GET /authors/",
                  evaluations=2)
    to_attr = load(model="Author", holder="Author", method="prefetch_related", path="books",
                   to_attr="recent", rows=2, loaded=3, forward=False)
    second, first = judge(nested, to_attr)  # by site, then path
    assert first.message == ('unused eager load: Author prefetch_related("books__tags") at '
                             "shop/views.py:12 — tags never read: 7 objects prefetched for "
                             "3 Book rows")
    assert first.hint == ('drop "books__tags" from prefetch_related() (prefetch only "books" '
                          "if that is read): its query runs for nothing")
    assert first.evidence["lines"] == [
        "in request GET /authors/; querysets from that line ran 2 times, none read it"]
    assert second.message == (
        'unused eager load: Author prefetch_related(Prefetch("books", to_attr="recent")) at '
        "shop/views.py:12 — recent never read: 3 objects prefetched for 2 Author rows")


def test_some_rows_without_a_related_object_are_counted():
    [finding] = judge(load(path="publisher", loaded=2, rows=4))
    assert finding.message.endswith("publisher never read on 4 Book rows (2 of them had one)")


class _State:
    pass


class _Instance:
    def __init__(self) -> None:
        self._state = _State()


def _path() -> EagerPath:
    return EagerPath((), "Book", "Book", "select_related", "author", None, -1, "")


def test_marks_merge_and_pickle_as_read():
    first, second = _path(), _path()
    obj = _Instance()
    mark([obj], {"author": first})
    mark([obj], {"publisher": second})
    marks = obj._state.__dict__[ATTR]
    assert marks == {"author": first, "publisher": second}
    assert pickle.loads(pickle.dumps(marks)) == {}
    assert first.used and second.used  # a copy is read out of sight: never judged unused


def test_a_watched_list_is_read_by_iterating_indexing_or_len_but_not_by_prefetch():
    for read in (list, len, lambda x: x[0], lambda x: 1 in x, bool, copy.deepcopy):
        path = _path()
        watched = WatchedList([1, 2])
        watched.dbguard_path = path
        read(watched)
        assert path.used, read
    path = _path()
    watched = WatchedList([1, 2])
    watched.dbguard_path = path
    LOCAL.busy = 1
    try:
        assert list(watched) == [1, 2]
    finally:
        LOCAL.busy = 0
    assert not path.used
    assert watched == [1, 2] and isinstance(watched, list)
