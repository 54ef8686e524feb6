"""After a connection-leak is reported, dbguard closes the leaked connections before
pytest-django drops the test database; later leaks are still reported by their own tests."""

from __future__ import annotations

import pytest

from tests.lifecycle_support import FILE_TEST_DB, run_json

LEAKS = """
import os

import psycopg
import pytest
from django.db import connection
from shop.models import Author

KEEP = []


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_async_leak():
    assert await Author.objects.acount() == 0


@pytest.mark.django_db(transaction=True)
def test_b_raw_leak():
    base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    conn = psycopg.connect(f"{base}/{connection.settings_dict['NAME']}", autocommit=True)
    conn.execute("SELECT 1")
    KEEP.append(conn)


@pytest.mark.django_db(transaction=True)
def test_c_clean():
    assert Author.objects.count() == 0


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_d_async_leak_again():
    assert await Author.objects.acount() == 0


def test_e_kept_connection_was_closed():
    assert KEEP and KEEP[0].closed
"""


@pytest.mark.parametrize("backend", ["postgres"])
def test_leaks_are_closed_after_the_report_and_later_leaks_still_fail(djproject, backend):
    djproject.add_settings(FILE_TEST_DB)
    djproject.write_test(LEAKS)
    result, findings = run_json(djproject, "-p", "no:randomly")
    result.assert_outcomes(passed=5, errors=3)
    assert [f["rule"] for f in findings["test_a_async_leak"]] == ["connection-leak"]
    assert [f["rule"] for f in findings["test_b_raw_leak"]] == ["connection-leak"]
    assert findings["test_c_clean"] == []
    # the executor thread lives on; its first connection was closed, the new one is reported
    assert [f["rule"] for f in findings["test_d_async_leak_again"]] == ["connection-leak"]
    out = result.stdout.str()
    assert "is being accessed by other users" not in out
    import psycopg

    with psycopg.connect(djproject.admin_dsn, autocommit=True) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE starts_with(datname, %s)",
                            (f"test_{djproject.db_name}",)).fetchone()
    assert left == (0,)
