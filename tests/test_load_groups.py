"""nplusone counts lazy loads on rows of one query; the test body's own calls are units of work."""

from __future__ import annotations

SERVICES = '''
from shop.models import Author, Book, Publisher


def describe(book):
    return f"{book.title} by {book.author.name}"


def describe_all(books):
    return [describe(b) for b in books]


def publishers_of_prefetched_books():
    return [b.publisher.name for a in Author.objects.prefetch_related("books")
            for b in a.books.all()]


def publishers_via_select_related():
    books = Book.objects.select_related("author").only("id", "author__id")
    return [b.author.name for b in books]


def authors_via_iterator():
    return [b.author.name for b in Book.objects.all().iterator(chunk_size=2)]


def deferred_titles():
    return [b.title for b in Book.objects.only("id")]


def tag_names(books):
    return [t.name for b in books for t in b.tags.all()]


def save_all(books):
    for book in books:
        book.title = book.title + "!"
        book.full_clean(exclude=["tags"])
        book.author.name
        book.save()


def tag_everything(names):
    from shop.models import Tag
    tags = [Tag.objects.get_or_create(name=n)[0] for n in names]
    return [(t.name, t.book_set.count()) for t in tags]
'''

FIXTURE = '''
import pytest
from shop import services
from shop.models import Author, Book, Publisher, Tag


@pytest.fixture
def shelf(db):
    house = Publisher.objects.create(name="House")
    tag = Tag.objects.create(name="t")
    books = []
    for i in range(4):
        book = Book.objects.create(title=f"Book {i}", publisher=house,
                                   author=Author.objects.create(name=f"Author {i}"))
        book.tags.add(tag)
        books.append(book)
    return books
'''


def _project(djproject, tests: str) -> None:
    djproject.write("shop/services.py", SERVICES)
    djproject.write_test(FIXTURE + tests)


def _nplusone_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("[dbguard:nplusone]")]


def test_lazy_loads_over_one_query_fire_whatever_the_path(djproject, backend):
    _project(djproject, '''
def test_helper_per_row(shelf):
    assert len(services.describe_all(Book.objects.all())) == 4


def test_prefetch_level(shelf):
    assert len(services.publishers_of_prefetched_books()) == 4


def test_select_related_rows(shelf):
    assert len(services.publishers_via_select_related()) == 4


def test_iterator(shelf):
    assert len(services.authors_via_iterator()) == 4


def test_deferred(shelf):
    assert len(services.deferred_titles()) == 4


def test_m2m_over_queryset(shelf):
    assert len(services.tag_names(Book.objects.all())) == 4
''')
    result = djproject.run("--dbguard", "-p", "no:randomly")
    result.assert_outcomes(failed=6)
    out = result.stdout.str()
    lines = _nplusone_lines(out)
    assert len(lines) == 6, lines
    assert any("4× SELECT" in x and "lazy Book.author at shop/services.py:6;" in x
               for x in lines)
    assert any("lazy Book.publisher at shop/services.py:14;" in x for x in lines)
    assert any("lazy Author.name at shop/services.py:20;" in x for x in lines)
    assert any("lazy Book.author at shop/services.py:24;" in x for x in lines)
    assert any("lazy Book.title at shop/services.py:28;" in x for x in lines)
    assert any("lazy Book.tags at shop/services.py:32;" in x for x in lines)
    assert "    nplusone: 6 fail\n" in out


def test_instances_loaded_one_at_a_time_never_make_an_nplusone(djproject, backend):
    _project(djproject, '''
def test_created_one_by_one_then_saved(shelf):
    services.save_all(shelf)


def test_get_or_create_then_loop(shelf):
    assert len(services.tag_everything(["t", "u", "v", "w"])) == 4


def test_separate_gets(shelf):
    books = [Book.objects.get(pk=b.pk) for b in shelf]
    assert len(services.describe_all(books)) == 4


def test_first_of_each(shelf):
    books = [Book.objects.filter(pk=b.pk).first() for b in shelf]
    assert len(services.tag_names(books)) == 4
''')
    result = djproject.run("--dbguard", "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    assert "[dbguard:nplusone]" not in result.stdout.str()
    assert "nplusone:" not in result.stdout.str()


def test_calls_the_test_body_repeats_are_separate_units(djproject, backend):
    _project(djproject, '''
def test_loop_in_the_test(shelf):
    for book in Book.objects.all():
        assert services.describe(book)


def test_calls_written_out(shelf):
    books = list(Book.objects.all())
    services.describe(books[0])
    services.describe(books[1])
    services.describe(books[2])


def test_library_called_three_times(shelf):
    from django.forms.models import model_to_dict
    for book in Book.objects.all():
        assert model_to_dict(book)["tags"]


def test_test_reads_relations_itself(shelf):
    assert [b.author.name for b in Book.objects.all()]


def test_one_call_that_loops(shelf):
    assert len(services.describe_all(Book.objects.all())) == 4
''')
    result = djproject.run("--dbguard", "-p", "no:randomly")
    result.assert_outcomes(passed=3, failed=2)
    out = result.stdout.str()
    lines = _nplusone_lines(out)
    assert len(lines) == 2, lines
    # reading relations in the test's own loop, with no call in between, is still an N+1
    assert sorted(line.split(" — ")[1].split(";")[0] for line in lines) == [
        "lazy Book.author at shop/services.py:6", "lazy Book.author at test_shop.py:38"]
    assert "FAILED test_shop.py::test_one_call_that_loops" in out
    assert "FAILED test_shop.py::test_test_reads_relations_itself" in out
    assert "nplusone-loop" not in out and "duplicate" not in out


NOTES_MODELS = '''
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models


class Note(models.Model):
    text = models.CharField(max_length=100)
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.PositiveIntegerField()
    target = GenericForeignKey("content_type", "object_id")
'''

NOTES_MIGRATION = '''
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = [("contenttypes", "0002_remove_content_type_name")]
    operations = [
        migrations.CreateModel(
            name="Note",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True)),
                ("text", models.CharField(max_length=100)),
                ("object_id", models.PositiveIntegerField()),
                ("content_type", models.ForeignKey(
                    on_delete=django.db.models.deletion.CASCADE,
                    to="contenttypes.contenttype")),
            ],
        ),
    ]
'''

NOTES_TESTS = '''
import pytest
from django.contrib.contenttypes.models import ContentType
from notes.models import Note
from shop.models import Author


def targets(notes):
    return [note.target.name for note in notes]


@pytest.fixture
def notes(db):
    kind = ContentType.objects.get_for_model(Author)
    return [Note.objects.create(text=str(i), content_type=kind,
                                object_id=Author.objects.create(name=f"A{i}").pk)
            for i in range(4)]


def test_generic_fk_over_a_queryset(notes):
    assert len(targets(Note.objects.all())) == 4


def test_generic_fk_on_created_notes(notes):
    assert len(targets(notes)) == 4


def test_template_over_a_queryset(client, db):
    from shop.models import Book
    for i in range(4):
        Book.objects.create(title=f"T{i}", author=Author.objects.create(name=f"W{i}"))
    assert client.get("/books-template/").status_code == 200
'''


def test_generic_fk_and_templates_keep_their_recall(djproject, backend):
    djproject.write("notes/__init__.py", "")
    djproject.write("notes/models.py", NOTES_MODELS)
    djproject.write("notes/migrations/__init__.py", "")
    djproject.write("notes/migrations/0001_initial.py", NOTES_MIGRATION)
    djproject.add_settings('INSTALLED_APPS = [*INSTALLED_APPS, "notes"]')
    djproject.write_test(NOTES_TESTS)
    result = djproject.run("--dbguard", "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()
    lines = _nplusone_lines(out)
    assert len(lines) == 2, lines
    assert "FAILED test_shop.py::test_generic_fk_over_a_queryset" in out
    assert "FAILED test_shop.py::test_template_over_a_queryset" in out
    assert any("lazy Note.target at test_shop.py:9; use prefetch_related(\"target\")" in line
               for line in lines)
    assert any("lazy Book.author at " in line for line in lines)
    assert "    while rendering template shop/books.html" in out
