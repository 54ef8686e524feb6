"""Query-shape examples: each test shows one rule on a realistic mistake in catalog.reports.

Run `pytest --dbguard example_tests`. The `nplusone`, `replica-write` and `query-timeout`
examples fail; `nplusone-loop`, `duplicate`, `slow-query`, `template-query`,
`unused-eager-load` and `pgbouncer-unsafe` are warnings listed in the dbguard summary.
"""

import pytest
from django.db import connection

from catalog import reports
from catalog.models import Author


def test_bestseller_lines(catalog):
    # Shows `nplusone`: one author query per book; the fix is select_related("author").
    assert reports.bestseller_lines()[0] == "The Dispossessed by Ursula K. Le Guin"


def test_shelf_sizes(catalog):
    # Shows `nplusone` on a reverse relation: the fix is annotate(Count("books")).
    Author.objects.create(name="Ann Leckie", country="US")
    assert reports.shelf_sizes() == {"Ann Leckie": 0, "N. K. Jemisin": 2, "Ursula K. Le Guin": 2}


def test_catalogue_lines(catalog):
    # Shows `unused-eager-load` (warn): the publisher is joined for every book and never read;
    # the fix is select_related("author").
    assert reports.catalogue_lines()[0] == "The Dispossessed, Ursula K. Le Guin"


def test_price_lookup(catalog):
    # Shows `nplusone-loop` (warn): one get() per ISBN; the fix is in_bulk / filter(isbn__in).
    prices = reports.prices_for([book.isbn for book in catalog])
    assert sum(prices.values()) == 1599 + 1799 + 1699 + 1699


def test_house_titles(catalog):
    # Shows `duplicate` (warn): the same publisher lookup with the same parameters per book.
    assert reports.house_titles() == ["The Dispossessed", "The Left Hand of Darkness"]


def test_invoice_audit(db):
    # Shows `slow-query` (warn): a generated range of a million order numbers.
    assert reports.missing_invoice_numbers(1_000_000) == 1_000_000


@pytest.mark.query_timeout(50)
def test_invoice_audit_within_the_request_deadline(db):
    # Shows `query-timeout`: the audit must answer within the 50 ms an API request may take.
    assert reports.missing_invoice_numbers(1_000_000) == 1_000_000


def test_shelf_page(client, catalog):
    # Shows `template-query` (warn via pytest.ini) and `nplusone` inside one request: the
    # template counts reviews per book while rendering.
    assert client.get("/shelf/").status_code == 200


@pytest.mark.django_db(transaction=True, databases=["default", "replica"])
def test_feature_books(catalog):
    # Shows `replica-write`: an UPDATE sent through the read replica's queryset.
    assert reports.mark_featured([catalog[0].pk]) == 1


@pytest.mark.skipif(connection.vendor != "postgresql",
                    reason="SET is PostgreSQL session state; run with DATABASE_URL")
def test_reporting_schema(db):
    # Shows `pgbouncer-unsafe` (warn via pytest.ini): SET without LOCAL outlives the
    # transaction, so under PgBouncer's transaction pooling it leaks to other clients.
    reports.use_reporting_schema()
