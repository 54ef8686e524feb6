"""nplusone, nplusone-loop and duplicate end to end: must-fire cases and the near misses."""

from __future__ import annotations

SERVICES = '''
from shop.models import Author, Book, Tag


def titles_with_authors():
    return [f"{b.title} by {b.author.name}" for b in Book.objects.all()]


def titles_with_authors_fast():
    return [f"{b.title} by {b.author.name}" for b in Book.objects.select_related("author")]


def tag_names_per_book():
    return {b.title: [t.name for t in b.tags.all()] for b in Book.objects.all()}


def tag_names_prefetched():
    return {b.title: [t.name for t in b.tags.all()] for b in Book.objects.prefetch_related("tags")}


def book_counts():
    return {a.name: a.books.count() for a in Author.objects.all()}


def books_per_author():
    return {a.name: [b.title for b in a.books.all()] for a in Author.objects.all()}


def authors_by_id(ids):
    return [Author.objects.get(pk=pk).name for pk in ids]


def author_of_each(ids):
    return [Book.objects.get(pk=pk).author.name for pk in ids]


def favourite_tag_each_time(n):
    return [Tag.objects.get(name="classic").pk for _ in range(n)]


def delete_authors():
    Author.objects.all().delete()


def copy_books(n):
    author = Author.objects.create(name="Copyist")
    Book.objects.bulk_create(Book(title=f"Copy {i}", author=author) for i in range(n))
'''

FIXTURE = '''
import pytest
from shop import services
from shop.models import Author, Book, Tag


@pytest.fixture
def shelf(db):
    classic = Tag.objects.create(name="classic")
    authors = [Author.objects.create(name=f"Author {i}") for i in range(4)]
    for i, author in enumerate(authors):
        book = Book.objects.create(title=f"Book {i}", author=author)
        book.tags.add(classic)
    return authors
'''


def _project(djproject, tests: str):
    djproject.write("shop/services.py", SERVICES)
    djproject.write_test(FIXTURE + tests)


def test_forward_fk_nplusone_fires_with_field_and_fix(djproject, backend):
    _project(djproject, '''
def test_lazy(shelf):
    assert len(services.titles_with_authors()) == 4


def test_select_related(shelf):
    assert len(services.titles_with_authors_fast()) == 4
''')
    result = djproject.run("--dbguard", "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert ('[dbguard:nplusone] N+1: 4× SELECT ... FROM "shop_author" WHERE "shop_author"."id" '
            '= %s LIMIT %s — lazy Book.author at shop/services.py:6; use select_related("author")'
            in out)
    assert "FAILED test_shop.py::test_lazy" in out
    assert "    nplusone: 1 fail\n" in out
    assert "nplusone-loop" not in out and "dbguard:duplicate" not in out


def test_manager_nplusone_names_m2m_and_reverse_fk_with_prefetch_fix(djproject, backend):
    _project(djproject, '''
def test_m2m(shelf):
    assert len(services.tag_names_per_book()) == 4


def test_reverse_fk(shelf):
    assert len(services.books_per_author()) == 4


def test_reverse_count(shelf):
    assert len(services.book_counts()) == 4


def test_prefetched(shelf):
    assert len(services.tag_names_prefetched()) == 4
''')
    result = djproject.run("--dbguard", "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=3)
    out = result.stdout.str()
    assert ('[dbguard:nplusone] N+1: 4× SELECT ... FROM "shop_tag" INNER JOIN "shop_book_tags" '
            'ON ("shop_tag"."id" = "shop_book_tags"."tag_id") WHERE "shop_book_tags"."book_id" = '
            '%s — lazy Book.tags at shop/services.py:14; use prefetch_related("tags")' in out)
    assert ('[dbguard:nplusone] N+1: 4× SELECT ... FROM "shop_book" WHERE "shop_book"."author_id" '
            '= %s — lazy Author.books at shop/services.py:26; use prefetch_related("books")'
            in out)
    assert ('— lazy Author.books.count() at shop/services.py:22; '
            'use annotate(books_count=Count("books"))' in out)
    assert "    nplusone: 3 fail\n" in out


def test_near_misses_do_not_fire(djproject, backend):
    _project(djproject, '''
from django.test import Client


def test_loop_over_requests(shelf):
    client = Client()
    for author in shelf:
        assert client.get(f"/authors/{author.pk}/").status_code == 200


def test_cascade_delete(shelf):
    services.delete_authors()
    assert Book.objects.count() == 0


def test_bulk_create(db):
    services.copy_books(2000)
    assert Book.objects.count() == 2000


def test_refresh_once(shelf):
    book = Book.objects.first()
    book.refresh_from_db()
    assert book.author.name


def test_below_threshold(shelf):
    assert [b.author.name for b in Book.objects.all()[:2]]


def test_prefetch_and_select_related(shelf):
    assert len(services.titles_with_authors_fast()) == 4
    assert len(services.tag_names_prefetched()) == 4


def test_assertions_in_test_code_repeat(shelf):
    for author in shelf:
        assert Author.objects.get(pk=author.pk).name == author.name
        author.refresh_from_db()
        author.refresh_from_db()
        author.refresh_from_db()
''')
    result = djproject.run("--dbguard", "-p", "no:randomly")
    result.assert_outcomes(passed=7)
    out = result.stdout.str()
    assert "0 failing findings, 0 warnings" in out


def test_request_with_nplusone_is_its_own_unit(djproject):
    _project(djproject, '''
def test_books_view(shelf, client):
    assert client.get("/books/").status_code == 200
''')
    result = djproject.run("--dbguard")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert ('N+1: 4× SELECT ... FROM "shop_author" WHERE "shop_author"."id" = %s LIMIT %s — '
            'lazy Book.author at shop/views.py:11; use select_related("author")' in out)
    assert "    in request GET /books/, alias default" in out


def test_loop_of_gets_is_nplusone_loop_not_lazy(djproject, backend):
    _project(djproject, '''
def test_gets(shelf):
    assert len(services.authors_by_id([a.pk for a in shelf])) == 4


def test_gets_with_relation(shelf):
    books = list(Book.objects.values_list("pk", flat=True))
    assert len(services.author_of_each(books)) == 4


def test_two_gets(shelf):
    assert len(services.authors_by_id([a.pk for a in shelf[:2]])) == 2
''')
    result = djproject.run("--dbguard", "-p", "no:randomly")
    result.assert_outcomes(passed=3)
    out = result.stdout.str()
    assert ('test_shop.py::test_gets: [nplusone-loop] N+1 loop: 4× SELECT ... FROM '
            '"shop_author" WHERE '
            '"shop_author"."id" = %s LIMIT %s — one query per item at shop/services.py:30; fetch '
            'the items in one query before the loop (filter(pk__in=...), in_bulk() or a join)'
            in out)
    assert ('test_shop.py::test_gets_with_relation: [nplusone-loop] N+1 loop: 4× SELECT ... '
            'FROM "shop_book" WHERE '
            '"shop_book"."id" = %s LIMIT %s — one query per item at shop/services.py:34' in out)
    assert "nplusone-loop: 2 warn" in out
    assert "dbguard:nplusone]" not in out


def test_duplicate_fires_and_threshold_option(djproject, backend):
    _project(djproject, '''
def test_same_query(shelf):
    assert len(services.favourite_tag_each_time(3)) == 3


def test_twice(shelf):
    assert len(services.favourite_tag_each_time(2)) == 2
''')
    result = djproject.run("--dbguard", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert ('test_shop.py::test_same_query: [duplicate] duplicate query: 3× the same '
            'SELECT ... FROM "shop_tag" WHERE '
            '"shop_tag"."name" = %s LIMIT %s with the same parameters at shop/services.py:38; '
            'run it once and reuse the result' in out)
    assert "duplicate: 1 warn" in out
    assert "nplusone-loop" not in out
    result = djproject.run("--dbguard", "--dbguard-nplusone-threshold", "2", "-p", "no:randomly")
    assert "duplicate: 2 warn" in result.stdout.str()


def test_nplusone_threshold_must_be_two_or_more(djproject):
    _project(djproject, "")
    result = djproject.run("--dbguard", "--dbguard-nplusone-threshold", "1")
    assert "--dbguard-nplusone-threshold must be 2 or more, got 1." in result.stderr.str()
