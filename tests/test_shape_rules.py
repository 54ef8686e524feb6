"""slow-query, query-timeout, template-query, replica-write, pgbouncer-unsafe, missing-index."""

from __future__ import annotations

import pytest

SLEEP_FIXTURE = '''
import time

import pytest
from django.db import connection


@pytest.fixture
def sleepy(db):
    connection.ensure_connection()
    if connection.vendor == "sqlite":
        connection.connection.create_function("pg_sleep", 1, lambda s: time.sleep(s))
'''


def test_slow_query_fires_over_limit_only(djproject, backend):
    djproject.write("shop/reports.py", '''
from django.db import connection


def slow_report(seconds):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [seconds])
''')
    djproject.write_test(SLEEP_FIXTURE + '''
from shop.reports import slow_report


def test_slow(sleepy):
    slow_report(0.25)


def test_fast(sleepy):
    slow_report(0.01)
''')
    result = djproject.run("--dbguard", "--dbguard-slow-ms", "150", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert "test_shop.py::test_slow: [slow-query] slow query: SELECT pg_sleep(%s) took " in out
    assert " ms (limit 150 ms) at shop/reports.py:7; check its plan with EXPLAIN ANALYZE" in out
    assert "slow-query: 1 warn" in out


REPORTS = '''
from django.db import connection


def slow_report(seconds):
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_sleep(%s)", [seconds])
        else:
            # CPU-bound on SQLite, so that the progress handler gets to run
            cursor.execute(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %s) "
                "SELECT count(*) FROM c", [int(seconds * 5_000_000)])
'''


def test_query_timeout_cancels_reports_and_restores(djproject, backend):
    djproject.write("shop/reports.py", REPORTS)
    djproject.write_test('''
import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from shop.reports import slow_report


@pytest.mark.query_timeout(100)
def test_cancelled(db):
    with CaptureQueriesContext(connection) as ctx:
        try:
            slow_report(3)
        except OperationalError:
            pass
    assert len(ctx.captured_queries) == 1


@pytest.mark.query_timeout(5000)
def test_within(db):
    slow_report(0.05)


def test_restored_afterwards(db):
    slow_report(0.3)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            assert cursor.fetchone()[0] == "0"


@pytest.mark.query_timeout("soon")
def test_bad_marker(db):
    pass
''')
    result = djproject.run("-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=2)
    out = result.stdout.str()
    sql = ("SELECT pg_sleep(%s)" if backend == "postgres" else
           'WITH RECURSIVE c(x) AS (SELECT %s UNION ALL SELECT x + %s FROM c WHERE x < %s) '
           'SELECT count(*) FROM c')
    line = 8 if backend == "postgres" else 11
    assert ("[dbguard:query-timeout] query cancelled after 100 ms (query_timeout) waiting for "
            f"its result: {sql} at shop/reports.py:{line} (alias default); make it faster or "
            "raise the timeout" in out)
    assert ("invalid @pytest.mark.query_timeout: ms must be a whole number of milliseconds, "
            "got 'soon'. Expected @pytest.mark.query_timeout(ms, *, using=None)." in out)
    assert "FAILED test_shop.py::test_cancelled" in out


TEMPLATE_TAGS = '''
from django import template

from shop.models import Tag

register = template.Library()


@register.simple_tag
def tag_count():
    return Tag.objects.count()
'''


def test_template_query_names_template_and_tag(djproject, backend):
    djproject.write("shop/templatetags/__init__.py", "")
    djproject.write("shop/templatetags/shop_tags.py", TEMPLATE_TAGS)
    djproject.write("shop/templates/shop/tagged.html",
                    "{% load shop_tags %}{% tag_count %}")
    djproject.write("shop/templates/shop/plain.html", "{{ names|join:',' }}")
    djproject.write_test('''
from django.template.loader import render_to_string
from shop.models import Author, Book


def test_template_queries(db):
    author = Author.objects.create(name="A")
    Book.objects.create(title="T", author=author)
    render_to_string("shop/tagged.html")
    render_to_string("shop/books.html", {"books": Book.objects.all()})


def test_view_passes_values(db):
    Author.objects.create(name="A")
    names = list(Author.objects.values_list("name", flat=True))
    assert render_to_string("shop/plain.html", {"names": names}) == "A"
''')
    result = djproject.run("--dbguard", "--dbguard-rule", "template-query=fail",
                           "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert ('[dbguard:template-query] query while rendering template shop/tagged.html: 1× '
            'SELECT COUNT(*) AS "__count" FROM "shop_tag" — template tag or filter tag_count() '
            'queried (render at shop/templatetags/shop_tags.py:11); pass the data in from the '
            'view instead of querying in the tag' in out)
    assert ('[dbguard:template-query] query while rendering template shop/books.html: 1× '
            'SELECT ... FROM "shop_book" — the template evaluated a queryset (render at '
            'test_shop.py:10); evaluate the queryset in the view and pass a list' in out)
    assert ('[dbguard:template-query] query while rendering template shop/books.html: 1× '
            'SELECT ... FROM "shop_author" WHERE "shop_author"."id" = %s LIMIT %s — a template '
            'variable loaded a relation (render at test_shop.py:10); load the relation in the '
            'view (select_related / prefetch_related)' in out)
    assert "template-query: 3 fail" in out


REPLICA_SETTINGS = '''
DATABASES["replica"] = dict(DATABASES["default"], TEST={"MIRROR": "default"})
'''


def test_replica_write_fires_on_readonly_alias_only(djproject, backend):
    djproject.add_settings(REPLICA_SETTINGS)
    djproject.write_test('''
import pytest
from shop.models import Author


@pytest.mark.django_db(databases=["default", "replica"], transaction=True)
def test_writes_to_replica():
    Author.objects.using("replica").create(name="oops")
    assert Author.objects.using("replica").count() == 1


@pytest.mark.django_db(databases=["default", "replica"], transaction=True)
def test_reads_from_replica():
    Author.objects.create(name="fine")
    assert Author.objects.using("replica").count() == 1
''')
    result = djproject.run("--dbguard", "--dbguard-readonly-alias", "replica",
                           "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert ('[dbguard:replica-write] write on read-only alias "replica": INSERT INTO '
            '"shop_author" ("name") VALUES (...)' in out)
    assert ("at test_shop.py:8; send writes to the primary (db_for_write in the router, or "
            ".using() with a writable alias)" in out)
    assert "FAILED test_shop.py::test_writes_to_replica" in out
    result = djproject.run("--dbguard", "-p", "no:randomly")
    result.assert_outcomes(passed=2)


@pytest.mark.parametrize("backend", ["postgres"])
def test_pgbouncer_unsafe_session_state(djproject, backend):
    djproject.write("shop/locks.py", '''
from django.db import connection, transaction


def session_state():
    with connection.cursor() as cursor:
        cursor.execute("SET search_path TO public")
        cursor.execute("SELECT pg_advisory_lock(42)")
        cursor.execute("SELECT pg_advisory_unlock(42)")
        cursor.execute("LISTEN orders")
        cursor.execute("UNLISTEN orders")


def transaction_state():
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 1000")
        cursor.execute("SELECT pg_advisory_xact_lock(42)")
''')
    djproject.write_test('''
from shop import locks


def test_session(db):
    locks.session_state()


def test_transaction(db):
    locks.transaction_state()
''')
    result = djproject.run("--dbguard", "--dbguard-rule", "pgbouncer-unsafe=fail",
                           "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert ("[dbguard:pgbouncer-unsafe] session-level SET breaks under transaction pooling: "
            "SET search_path TO PUBLIC at shop/locks.py:7; use SET LOCAL inside a transaction"
            in out)
    assert ("[dbguard:pgbouncer-unsafe] session advisory lock breaks under transaction pooling: "
            "SELECT pg_advisory_lock(%s) at shop/locks.py:8; use pg_advisory_xact_lock()" in out)
    assert ("[dbguard:pgbouncer-unsafe] LISTEN breaks under transaction pooling: LISTEN orders "
            "at shop/locks.py:10;" in out)
    assert "pgbouncer-unsafe: 3 fail" in out


@pytest.mark.parametrize("backend", ["postgres"])
def test_missing_index_with_explain(djproject, backend):
    djproject.write_test('''
from shop.models import Author, Book


def test_unindexed_filter(db):
    author = Author.objects.create(name="Ann")
    Book.objects.create(title="Dune", author=author)
    assert Book.objects.filter(title="Dune").count() == 1


def test_indexed_filter(db):
    author = Author.objects.create(name="Ann")
    assert list(Book.objects.filter(author=author)) == []
    assert Author.objects.get(pk=author.pk) == author
''')
    result = djproject.run("--dbguard", "--dbguard-explain", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert ("test_shop.py::test_unindexed_filter: [missing-index] missing index: sequential scan "
            "on \"shop_book\" filtering ((title)::text = 'Dune'::text) for SELECT COUNT(*) AS "
            "\"__count\" FROM \"shop_book\" WHERE \"shop_book\".\"title\" = %s at "
            "test_shop.py:8; add models.Index(fields=[\"title\"]) to the model of shop_book" in out)
    assert "missing-index: 1 warn" in out
    result = djproject.run("--dbguard", "-p", "no:randomly")
    assert "missing-index" not in result.stdout.str()
