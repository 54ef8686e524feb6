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
        '4× SELECT ... FROM "shop_author" WHERE "shop_author"."id" = %s LIMIT %s'
        "  at test_shop.py:18"
        in out
    )
    assert '1× SELECT ... FROM "shop_book"  at test_shop.py:17' in out


def test_setup_queries_are_not_charged_to_the_call_phase(djproject):
    djproject.write_test('''
        import pytest
        from shop.models import Author

        @pytest.fixture
        def authors(db):
            return [Author.objects.create(name=f"a{n}") for n in range(10)]

        @pytest.mark.query_budget(1)
        def test_one_query(authors):
            assert Author.objects.count() == 10
    ''')
    djproject.run().assert_outcomes(passed=1)


def test_transaction_control_counts_only_with_count_tx(djproject):
    djproject.write_test('''
        import pytest
        from django.db import transaction
        from shop.models import Author

        def write_twice():
            with transaction.atomic():
                Author.objects.create(name="a")
            with transaction.atomic():
                Author.objects.create(name="b")

        @pytest.mark.django_db
        @pytest.mark.query_budget(2)
        def test_savepoints_not_counted():
            write_twice()

        @pytest.mark.django_db
        @pytest.mark.query_budget(2, count_tx=True)
        def test_savepoints_counted():
            write_twice()
    ''')
    result = djproject.run()
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "query budget exceeded: 6 queries > budget 2 (alias default)" in out
    assert "2× SAVEPOINT <name>  at test_shop.py:7 (1×), test_shop.py:9 (1×)" in out
    assert "2× RELEASE SAVEPOINT <name>  at test_shop.py:7 (1×), test_shop.py:9 (1×)" in out
    assert "test_savepoints_not_counted FAILED" not in out


def test_using_restricts_the_budget_to_one_alias(djproject):
    djproject.add_settings('''
DATABASES["archive"] = {"ENGINE": "django.db.backends.sqlite3",
                        "NAME": str(BASE_DIR / "archive.sqlite3")}
''')
    djproject.write_test('''
        import pytest
        from django.db import connections
        from shop.models import Author

        def touch_both():
            Author.objects.count()
            Author.objects.count()
            with connections["archive"].cursor() as cursor:
                cursor.execute("SELECT 1")

        @pytest.mark.django_db(databases=["default", "archive"])
        @pytest.mark.query_budget(1, using="archive")
        def test_archive_within():
            touch_both()

        @pytest.mark.django_db(databases=["default", "archive"])
        @pytest.mark.query_budget(1, using="default")
        def test_default_over():
            touch_both()

        @pytest.mark.django_db(databases=["default", "archive"])
        @pytest.mark.query_budget(2)
        def test_all_aliases_over():
            touch_both()
    ''')
    result = djproject.run("-v")
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()
    assert "test_archive_within PASSED" in out
    assert "query budget exceeded: 2 queries > budget 1 (alias default)" in out
    assert "query budget exceeded: 3 queries > budget 2 (aliases archive, default)" in out
    assert "1× SELECT %s  at test_shop.py:10" in out


def test_closest_marker_wins_and_beats_max_queries(djproject):
    djproject.write_test('''
        import pytest
        from shop.models import Author

        pytestmark = pytest.mark.query_budget(5)

        def three():
            for _ in range(3):
                Author.objects.count()

        @pytest.mark.django_db
        def test_module_budget_applies():
            three()

        @pytest.mark.django_db
        @pytest.mark.query_budget(2)
        def test_function_budget_wins():
            three()

        @pytest.mark.query_budget(10)
        class TestClassBudget:
            @pytest.mark.django_db
            def test_class_budget(self):
                three()
    ''')
    result = djproject.run("-v", "--dbguard", "--dbguard-max-queries", "1")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "test_module_budget_applies PASSED" in out
    assert "test_class_budget PASSED" in out
    assert "query budget exceeded: 3 queries > budget 2 (alias default)" in out


def test_max_queries_option_applies_under_dbguard_only(djproject):
    djproject.write_test('''
        import pytest
        from shop.models import Author

        @pytest.mark.django_db
        def test_three():
            for _ in range(3):
                Author.objects.count()
    ''')
    result = djproject.run("--dbguard", "--dbguard-max-queries", "2")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*[[]dbguard:budget[]] query budget exceeded: 3 queries > budget 2 (alias default)"
        " [[]--dbguard-max-queries[]]",
        '    3× SELECT COUNT(*) AS "__count" FROM "shop_author"  at test_shop.py:8',
    ])
    djproject.run("--dbguard-max-queries", "2").assert_outcomes(passed=1)


BAD_MARKERS = [
    ('query_budget("five")', "invalid @pytest.mark.query_budget: n must be a whole number of "
     "queries, got 'five'. Expected @pytest.mark.query_budget(n, *, using=None, count_tx=False)."),
    ("query_budget(-1)", "invalid @pytest.mark.query_budget: n must be 0 or more, got -1."),
    ("query_budget(3, usin='default')", "invalid @pytest.mark.query_budget: query_budget() got "
     "an unexpected keyword argument 'usin'."),
    ("query_budget()", "invalid @pytest.mark.query_budget: query_budget() missing 1 required "
     "positional argument: 'n'."),
    ("query_budget(2, using=3)", "invalid @pytest.mark.query_budget: using must be an alias "
     "name or a list of alias names, got 3."),
]


def test_bad_marker_arguments_fail_only_that_test(djproject):
    body = "\n".join(
        f"@pytest.mark.{marker}\n@pytest.mark.django_db\ndef test_bad_{n}():\n    pass\n"
        for n, (marker, _) in enumerate(BAD_MARKERS)
    )
    djproject.write_test("import pytest\n\n" + body + "\ndef test_unaffected():\n    pass\n")
    result = djproject.run()
    # a failure of that test, once: not an ERROR, no chained traceback
    result.assert_outcomes(passed=1, failed=len(BAD_MARKERS))
    out = result.stdout.str()
    assert "During handling of the above exception" not in out
    for _, message in BAD_MARKERS:
        assert message in out


def test_dbguard_fixture_counts_queries_and_sites(djproject):
    djproject.write_test('''
        import threading
        import pytest
        from django.db import connection
        from shop.models import Author

        @pytest.mark.django_db(transaction=True)
        def test_fixture(dbguard, client):
            Author.objects.create(name="a")
            assert dbguard.count() == 1
            client.get("/books/")
            def in_thread():
                Author.objects.count()
                connection.close()
            worker = threading.Thread(target=in_thread, name="report-worker")
            worker.start(); worker.join()
            queries = [q for q in dbguard.queries if q.phase == "call"]
            seen = [(q.fingerprint.split(" ")[0], q.unit, q.thread, str(q.call_site))
                    for q in queries]
            assert seen == [
                ("INSERT", "test", "MainThread", "test_shop.py:9"),
                ("SELECT", "GET /books/", "MainThread", "shop/views.py:10"),
                ("SELECT", "test", "report-worker", "test_shop.py:13"),
            ]
            assert dbguard.count() == 3 and dbguard.count(using="other") == 0
            assert dbguard.stress_index is None
    ''')
    result = djproject.run()
    result.assert_outcomes(passed=1)


def test_dbguard_budget_block_fails_with_grouped_message(djproject):
    djproject.write_test('''
        import pytest
        from shop.models import Author

        @pytest.mark.django_db
        def test_block(dbguard):
            Author.objects.count()
            with dbguard.budget(1):
                Author.objects.count()
                Author.objects.filter(name="x").exists()

        @pytest.mark.django_db
        def test_block_ok(dbguard):
            with dbguard.budget(1):
                Author.objects.count()
            Author.objects.count()
    ''')
    result = djproject.run("-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*[[]dbguard:budget[]] query budget exceeded: 2 queries > budget 1 (alias default)"
        " [[]dbguard.budget() block[]]",
        '    1× SELECT ... FROM "shop_author" WHERE "shop_author"."name" = %s LIMIT %s'
        "  at test_shop.py:10",
        '    1× SELECT COUNT(*) AS "__count" FROM "shop_author"  at test_shop.py:9',
    ])


SHARED_FIXTURE_TESTS = """
import pytest
from shop.models import Author


@pytest.fixture(scope="module")
def library(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        authors = [Author.objects.create(name=f"shared {n}") for n in range(3)]
    yield authors
    with django_db_blocker.unblock():
        Author.objects.filter(name__startswith="shared ").delete()


@pytest.fixture
def guest(db):
    return Author.objects.create(name="guest")


@pytest.mark.query_budget(1)
def test_first(library, guest, db):
    assert Author.objects.filter(name__startswith="shared ").count() == 3


@pytest.mark.query_budget(1)
def test_last(library, db):
    assert Author.objects.filter(name__startswith="shared ").count() == 3
"""


def test_module_fixture_queries_are_the_sessions_not_a_tests(djproject, tmp_path):
    """A module-scoped fixture's set-up and teardown queries are charged to the session (shared
    fixture queries), never to the test that happened to set it up or tear it down; a
    function-scoped fixture's queries stay the test's set-up."""
    djproject.write_test(SHARED_FIXTURE_TESTS)
    path = tmp_path / "report.json"
    djproject.run("-p", "no:randomly", "--dbguard", "--dbguard-json", str(path)
                  ).assert_outcomes(passed=2)
    document = json.loads(path.read_text())
    tests = {t["nodeid"].split("::")[-1]: t for t in document["tests"]}
    first, last = tests["test_first"]["queries"], tests["test_last"]["queries"]
    # test_first: the guest's INSERT is its set-up; the library's three INSERTs are not
    assert (first["setup"], first["call"]) == (1, 1)
    assert (last["setup"], last["call"]) == (0, 1)
    # test_last tears the module fixture down (a SELECT and a DELETE), which is not charged to
    # it: its teardown is pytest-django's own, like test_first's
    assert last["teardown"] == first["teardown"]
    # three INSERTs and the DELETE's queries belong to the session
    assert document["summary"]["shared_fixture_queries"] >= 4
