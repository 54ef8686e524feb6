"""Call sites of the test harness's own queries, read by a project rule.

pytest-django's db fixtures call Django's harness (_pre_setup, _post_teardown): further out there
is only pytest, so the tap's walk ends at the harness frame and such queries have no call site.
A project fixture that calls the harness itself (a flush) is the code that ran those queries:
its line stays their call site, and so does a signal receiver's own query in the middle of it.
"""

from __future__ import annotations

import json

CONFTEST = '''
import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models.signals import post_migrate


from pytest_dbguard.events import Finding
from pytest_dbguard.rules import RuleSpec


def teardown_sites(record, context):
    rows = [q for q in record.phase("teardown").queries() if not q.is_transaction_control]
    if rows:
        yield Finding(rule="teardown-sites", nodeid=record.nodeid, phase="teardown",
                      message=", ".join(sorted({f"{q.fingerprint.split()[0]}@{q.call_site or '-'}"
                                                for q in rows})))


def pytest_dbguard_register_rules(register):
    # judged once the fixtures are torn down, where the harness's queries are
    register.spec(RuleSpec("teardown-sites", "warn", "where each teardown query came from",
                           teardown_sites, stage="teardown", builtin=False))


def receiver(**kwargs):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 42")


@pytest.fixture
def flushed(transactional_db):
    yield
    post_migrate.connect(receiver, dispatch_uid="harness-sites")
    try:
        call_command("flush", verbosity=0, interactive=False)
    finally:
        post_migrate.disconnect(dispatch_uid="harness-sites")
'''

TESTS = '''
import pytest
from shop.models import Author


@pytest.mark.django_db
def test_db():
    Author.objects.create(name="a")


def test_flushed(flushed):
    Author.objects.create(name="b")
'''


def test_harness_queries_have_no_site_unless_project_code_ran_the_harness(djproject, backend):
    djproject.write("conftest.py", CONFTEST)
    djproject.write_test(TESTS)
    result = djproject.run("--dbguard", "--dbguard-json", "out.json")
    result.assert_outcomes(passed=2)
    document = json.loads((djproject.path / "out.json").read_text())
    messages = {t["nodeid"].split("::")[1]: [f["message"] for f in t["findings"]
                                             if f["rule"] == "teardown-sites"]
                for t in document["tests"]}
    # pytest-django's own teardown queries (SQLite checks the constraints, PostgreSQL makes
    # them immediate): no site
    assert messages["test_db"] == (["PRAGMA@-"] if backend == "sqlite" else ["SET@-"])
    # the project's flush: every statement it ran is charged to the fixture's call_command line
    # (post_migrate's handlers included), the receiver's own query to the receiver; then
    # pytest-django's flush of the transactional test: no site
    [flushed] = messages["test_flushed"]
    wipe = "DELETE" if backend == "sqlite" else "TRUNCATE"
    expected = {f"{wipe}@-", f"{wipe}@conftest.py:36", "INSERT@-", "INSERT@conftest.py:36",
                "SELECT@-", "SELECT@conftest.py:28", "SELECT@conftest.py:36"}
    if backend == "sqlite":  # the project's flush resets SQLite's sequences
        expected.add("UPDATE@conftest.py:36")
    assert set(flushed.split(", ")) == expected, flushed
