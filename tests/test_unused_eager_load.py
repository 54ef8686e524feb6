"""unused-eager-load end to end: select_related / prefetch_related paths nothing ever read."""

from __future__ import annotations

import json
from typing import Any

RULE = "unused-eager-load"

# The code under test: querysets built in the app, the way views and services build them.
SERVICES = """
from django.db.models import Prefetch
from django.template.loader import render_to_string

from shop.models import Author, Book


def titles():
    return [b.title for b in Book.objects.select_related("author")]


def author_names():
    return [a.name for a in Author.objects.prefetch_related("books")]


def author_names_ordered():
    ordered = Prefetch("books", queryset=Book.objects.order_by("title"), to_attr="ordered_books")
    return [a.name for a in Author.objects.prefetch_related(ordered)]


def book_titles_by_author():
    authors = Author.objects.prefetch_related("books__tags")
    return {a.name: [b.title for b in a.books.all()] for a in authors}


def author_ids():
    return [b.author_id for b in Book.objects.select_related("author")]


def rendered():
    books = Book.objects.select_related("author")
    return render_to_string("shop/eager.html", {"books": books})


def serialize(book):
    return {"title": book.title, "author": {"name": book.author.name}}


def serialized():
    return [serialize(b) for b in Book.objects.select_related("author")]


def with_only():
    books = Book.objects.select_related("author").only("title", "author__name")
    return [f"{b.title} by {b.author.name}" for b in books]


def first_author():
    books = list(Book.objects.select_related("author").order_by("title"))
    return books[0].author.name


def tag_names():
    authors = Author.objects.prefetch_related("books__tags")
    return sorted(t.name for a in authors for b in a.books.all() for t in b.tags.all())


def ordered_titles():
    ordered = Prefetch("books", queryset=Book.objects.order_by("title"), to_attr="ordered_books")
    return [[b.title for b in a.ordered_books] for a in Author.objects.prefetch_related(ordered)]


def publisher_less():
    return [b.title for b in Book.objects.select_related("publisher")]


def none_found():
    return [b.title for b in Book.objects.filter(title="nope").select_related("author")]


def as_values():
    return list(Book.objects.select_related("author").values("title"))


def books_for_caller():
    return list(Book.objects.select_related("author"))


def streamed_titles():
    return [b.title for b in Book.objects.select_related("author").iterator(chunk_size=2)]


def every_forward_key():
    return [b.title for b in Book.objects.select_related()]


def cached_authors():
    from django.core.cache import cache

    cache.set("books", list(Book.objects.select_related("author")))
    return [b.author.name for b in cache.get("books")]
"""

VIEWS = """
from django.http import HttpResponse
from django.shortcuts import render

from shop.models import Book


def titles_view(request):
    books = Book.objects.select_related("author").order_by("title")
    return HttpResponse(", ".join(b.title for b in books))


def shelf_view(request):
    books = Book.objects.select_related("author").order_by("title")
    return render(request, "shop/eager.html", {"books": books})


def bare_shelf_view(request):
    books = Book.objects.select_related("author").order_by("title")
    return render(request, "shop/titles.html", {"books": books})
"""

URLS = """
from django.urls import path

from shop import eager_views

urlpatterns = [
    path("titles/", eager_views.titles_view),
    path("shelf/", eager_views.shelf_view),
    path("bare-shelf/", eager_views.bare_shelf_view),
]
"""

TEMPLATE = """{% for book in books %}{{ book.title }} by {{ book.author.name }}
{% endfor %}"""

TESTS = """
import pytest
from django.test import TestCase
from shop import services
from shop.models import Author, Book, Tag


@pytest.fixture
def books(db):
    ann, bob = Author.objects.create(name="Ann"), Author.objects.create(name="Bob")
    red = Tag.objects.create(name="red")
    for title, author in (("A", ann), ("B", ann), ("C", bob)):
        Book.objects.create(title=title, author=author).tags.add(red)


def test_select_related_unused(books):
    assert services.titles() == ["A", "B", "C"]


def test_prefetch_related_unused(books):
    assert services.author_names() == ["Ann", "Bob"]


def test_prefetch_to_attr_unused(books):
    assert services.author_names_ordered() == ["Ann", "Bob"]


def test_nested_lookup_partly_unused(books):
    assert services.book_titles_by_author() == {"Ann": ["A", "B"], "Bob": ["C"]}


def test_only_the_key_read(books):
    assert len(services.author_ids()) == 3


def test_read_in_a_template(books):
    assert "A by Ann" in services.rendered()


def test_read_in_a_serializer(books):
    assert services.serialized()[0] == {"title": "A", "author": {"name": "Ann"}}


def test_read_with_only(books):
    assert services.with_only()[0] == "A by Ann"


def test_one_row_of_many_read(books):
    assert services.first_author() == "Ann"


def test_deeper_level_read(books):
    assert services.tag_names() == ["red", "red", "red"]


def test_to_attr_read(books):
    assert services.ordered_titles() == [["A", "B"], ["C"]]


def test_nullable_fk_all_null(books):
    assert len(services.publisher_less()) == 3


def test_empty_queryset(books):
    assert services.none_found() == []


def test_values(books):
    assert len(services.as_values()) == 3


def test_read_later_by_the_test_body(books):
    found = services.books_for_caller()
    assert [b.author.name for b in found] == ["Ann", "Ann", "Bob"]


def test_queryset_of_the_test_itself(books):
    assert [b.title for b in Book.objects.select_related("author")] == ["A", "B", "C"]


def test_iterator_unused(books):
    assert services.streamed_titles() == ["A", "B", "C"]


def test_select_related_without_fields_unused(books):
    assert len(services.every_forward_key()) == 3


def test_read_from_a_cached_copy(books):
    assert services.cached_authors() == ["Ann", "Ann", "Bob"]


def test_request_unused(client, books):
    assert client.get("/titles/").content == b"A, B, C"


def test_request_read_by_the_template(client, books):
    assert b"A by Ann" in client.get("/shelf/").content


def test_request_context_read_by_the_test(client, books):
    response = client.get("/bare-shelf/")
    assert response.context["books"][0].author.name == "Ann"


@pytest.fixture
def loaded_titles(books):
    return services.titles()


def test_evaluated_in_a_fixture(loaded_titles):
    assert loaded_titles == ["A", "B", "C"]


class SetUpTests(TestCase):
    def setUp(self):
        author = Author.objects.create(name="Cy")
        Book.objects.create(title="D", author=author)
        self.titles = services.titles()

    def test_evaluated_in_set_up(self):
        self.assertEqual(self.titles, ["D"])
"""

FIRING = {
    "test_select_related_unused": (
        'select_related("author")', "def titles():", "author never read on 3 Book rows"),
    "test_prefetch_related_unused": (
        'prefetch_related("books")', "def author_names():",
        "books never read: 3 objects prefetched for 2 Author rows"),
    "test_prefetch_to_attr_unused": (
        'prefetch_related(Prefetch("books", to_attr="ordered_books"))',
        'return [a.name for a in Author.objects.prefetch_related(ordered)]',
        "ordered_books never read: 3 objects prefetched for 2 Author rows"),
    "test_nested_lookup_partly_unused": (
        'prefetch_related("books__tags")', "def book_titles_by_author():",
        "tags never read: 3 objects prefetched for 3 Book rows"),
    "test_only_the_key_read": (
        'select_related("author")', "def author_ids():", "author never read on 3 Book rows"),
    "test_iterator_unused": (
        'select_related("author")', "def streamed_titles():",
        "author never read on 3 Book rows"),
    "test_select_related_without_fields_unused": (
        'select_related("author")', "def every_forward_key():",
        "author never read on 3 Book rows"),
}


def _services_line(anchor: str) -> int:
    """The line of the first select_related / prefetch_related call from `anchor` on."""
    at = SERVICES.index("_related(", SERVICES.index(anchor))
    return SERVICES[:at].count("\n") + 1


def _run(project: Any) -> tuple[Any, dict[str, list[dict[str, Any]]]]:
    project.write("shop/services.py", SERVICES)
    project.write("shop/templates/shop/eager.html", TEMPLATE, dedent=False)
    project.write("shop/templates/shop/titles.html",
                  "{% for book in books %}{{ book.title }} {% endfor %}", dedent=False)
    project.write("shop/eager_views.py", VIEWS)
    project.write("proj/urls.py", URLS)
    project.write_test(TESTS)
    report = project.path / "dbguard.json"
    result = project.run("--dbguard", "-p", "no:randomly", "--dbguard-json", str(report))
    data = json.loads(report.read_text())
    findings = {entry["nodeid"].split("::")[-1]: [f for f in entry["findings"]
                                                 if f["rule"] == RULE]
                for entry in data["tests"]}
    return result, findings


def test_unused_eager_loads(djproject, backend):
    result, findings = _run(djproject)
    result.assert_outcomes(passed=24)
    firing = {name for name, found in findings.items() if found}
    assert firing == set(FIRING) | {"test_request_unused"}
    for name, (asked, anchor, what) in FIRING.items():
        [finding] = findings[name]
        model = "Author" if "prefetch" in asked else "Book"
        site = f"shop/services.py:{_services_line(anchor)}"
        assert finding["action"] == "warn"
        assert finding["message"] == f"unused eager load: {model} {asked} at {site} — {what}"
        assert finding["evidence"]["site"] == site
        assert finding["evidence"]["unit"] == "the test body"
    [in_request] = findings["test_request_unused"]
    view_line = VIEWS[:VIEWS.index("_related(")].count("\n") + 1
    assert in_request["message"] == (
        f'unused eager load: Book select_related("author") at shop/eager_views.py:{view_line} '
        "— author never read on 3 Book rows")
    assert in_request["evidence"]["unit"] == "request GET /titles/"
    nested = findings["test_nested_lookup_partly_unused"][0]
    assert nested["evidence"]["path"] == "books__tags"
    assert nested["hint"].startswith('drop "books__tags" from prefetch_related() '
                                     '(prefetch only "books" if that is read)')
    out = result.stdout.str()
    assert f"    {RULE}: 8 warn" in out
    assert "[dbguard:" not in out
