"""swallowed-db-error end to end: an error caught inside the very atomic block it broke."""

from __future__ import annotations

from pytest_dbguard.rules.swallowed import HINT_SWALLOWED
from tests.lifecycle_support import line_of, run_json

IMPORTS = """
from django.db import IntegrityError, connection, transaction
from shop.models import Author, Tag


def import_with_audit(pk, name):
    with transaction.atomic():
        Tag.objects.create(name=f"imported {name}")
        try:
            Author.objects.create(id=pk, name=name)
        except IntegrityError:
            pass


def import_then_count(pk, name):
    with transaction.atomic():
        try:
            Author.objects.create(id=pk, name=name)
        except IntegrityError:
            pass
        return Author.objects.count()


def import_raw(pk):
    with transaction.atomic():
        try:
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO shop_author (id, name) VALUES (%s, 'x')", [pk])
        except IntegrityError:
            pass


def import_row_by_row(rows):
    with transaction.atomic():
        for pk, name in rows:
            try:
                with transaction.atomic():
                    Author.objects.create(id=pk, name=name)
            except IntegrityError:
                pass


def import_or_skip(pk, name):
    try:
        with transaction.atomic():
            Author.objects.create(id=pk, name=name)
    except IntegrityError:
        return None
"""

TESTS = """
import pytest
from shop.imports import (
    import_or_skip,
    import_raw,
    import_row_by_row,
    import_then_count,
    import_with_audit,
)
from shop.models import Author, Tag


@pytest.fixture
def author():
    return Author.objects.create(id=1, name="first")


@pytest.mark.django_db
def test_audit_row_silently_lost(author):
    import_with_audit(1, "again")


@pytest.mark.django_db
def test_then_count_fails(author):
    import_then_count(1, "again")


@pytest.mark.django_db
def test_raw_insert_swallowed(author):
    import_raw(1)


@pytest.mark.django_db
def test_savepoint_per_row(author):
    import_row_by_row([(1, "again"), (2, "second")])
    assert Author.objects.count() == 2


@pytest.mark.django_db
def test_try_around_the_block(author):
    assert import_or_skip(1, "again") is None
    assert Tag.objects.count() == 0
"""


def _lines(error: str, sql: str, site: int, function: str, caught: int) -> list[str]:
    return [error, f"    from {sql} at shop/imports.py:{site}; caught and not re-raised in "
                   f"{function}() at shop/imports.py:{caught}"]


def test_errors_caught_inside_their_block(djproject, backend):
    djproject.write("shop/imports.py", IMPORTS)
    djproject.write_test(TESTS)
    result, findings = run_json(djproject)
    postgres = backend == "postgres"
    # import_then_count raises TransactionManagementError on both backends; on PostgreSQL the
    # raw INSERT aborts the transaction and the block's exit fails too
    result.assert_outcomes(passed=2, failed=3)
    insert = ('INSERT INTO "shop_author" ("id", "name") VALUES (...) RETURNING '
              '"shop_author"."id"')
    if postgres:
        duplicate = ('IntegrityError (SQLSTATE 23505): duplicate key value violates unique '
                     'constraint "shop_author_pkey"')
    else:
        duplicate = "IntegrityError: UNIQUE constraint failed: shop_author.id"

    def block(name: str) -> int:
        return line_of(IMPORTS, f"def {name}(") + 1

    create = line_of(IMPORTS, "Author.objects.create(id=pk, name=name)")  # import_with_audit
    [audit] = findings["test_audit_row_silently_lost"]
    assert audit["rule"] == "swallowed-db-error"
    assert audit["message"] == (
        f"1 database error was caught inside the atomic block at shop/imports.py:"
        f"{block('import_with_audit')} (on 'default') instead of outside it: the block rolled "
        f"back at its exit, silently undoing every write made in it")
    assert audit["lines"] == _lines(duplicate, insert, create, "import_with_audit", create)
    assert audit["hint"] == HINT_SWALLOWED

    [then] = findings["test_then_count_fails"]
    then_create = line_of(IMPORTS, "def import_then_count(") + 3
    assert then["message"] == (
        f"1 database error was caught inside the atomic block at shop/imports.py:"
        f"{block('import_then_count')} (on 'default') instead of outside it: the block raised "
        f"TransactionManagementError: An error occurred in the current transaction. You can't "
        f"execute queries until the end of the 'atomic' block.; the test then failed with "
        f"TransactionManagementError, which this explains")
    assert then["lines"] == _lines(duplicate, insert, then_create, "import_then_count",
                                   then_create)

    [raw] = findings["test_raw_insert_swallowed"]
    if postgres:
        outcome = ("could not commit: PostgreSQL aborted the transaction at the error, so the "
                   "block fails at its exit; the test then failed with InternalError, which "
                   "this explains")
    else:
        outcome = ("committed without the failed statement; on PostgreSQL the same error "
                   "aborts the transaction and the block fails at its exit")
    assert raw["message"].endswith(f"instead of outside it: the block {outcome}")
    for near_miss in ("test_savepoint_per_row", "test_try_around_the_block"):
        assert findings[near_miss] == [], near_miss
    out = result.stdout.str()
    # the finding rides along with the failure it explains
    assert "dbguard findings" in out
    assert "TransactionManagementError" in out
