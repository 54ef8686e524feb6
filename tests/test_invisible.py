"""The plugin is invisible to Django's own query counting, and inert where it is not asked for."""

from __future__ import annotations

import re

COUNTING_TESTS = '''
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from shop.models import Author, Book

def workload():
    author = Author.objects.create(name="Le Guin")
    with transaction.atomic():
        Book.objects.create(title="The Dispossessed", author=author)
    list(Book.objects.select_related("author"))

@pytest.mark.django_db
@pytest.mark.query_budget(100)
def test_django_assert_num_queries(django_assert_num_queries):
    with django_assert_num_queries(EXPECTED):
        workload()

@pytest.mark.django_db
@pytest.mark.query_budget(100)
def test_capture_queries_context():
    with CaptureQueriesContext(connection) as ctx:
        workload()
    assert len(ctx.captured_queries) == EXPECTED

@pytest.mark.django_db
@pytest.mark.query_budget(100)
def test_assert_num_queries_testcase_style():
    from django.test import TestCase
    with TestCase().assertNumQueries(EXPECTED):
        workload()
'''


def _failure_lines(text: str) -> list[str]:
    """The lines that state counts: pytest-django's, CaptureQueriesContext's, assertNumQueries'."""
    keep = ("Failed: Expected to perform", "assert 5 == 4", "AssertionError: 5 != 4", "FAILED")
    return sorted(line.strip() for line in text.splitlines() if any(k in line for k in keep))


def test_django_counters_unchanged_with_plugin_on(djproject, backend):
    # Django counts 3 statements plus the savepoint pair of the inner atomic, on both backends
    djproject.write_test(COUNTING_TESTS.replace("EXPECTED", "5"))
    with_plugin = djproject.run("--dbguard")
    with_plugin.assert_outcomes(passed=3)
    assert "dbguard: 3 tests recorded" in with_plugin.stdout.str()
    djproject.run(dbguard=False).assert_outcomes(passed=3)
    # a wrong expectation fails identically, with the same counts, with and without the plugin
    djproject.write_test(COUNTING_TESTS.replace("EXPECTED", "4"))
    on, off = djproject.run("--dbguard"), djproject.run(dbguard=False)
    on.assert_outcomes(failed=3)
    off.assert_outcomes(failed=3)
    assert _failure_lines(on.stdout.str()) == _failure_lines(off.stdout.str())
    assert len(_failure_lines(on.stdout.str())) == 6
    assert "AssertionError: 5 != 4 : 5 queries executed, 4 expected" in on.stdout.str()


PLAIN_PROJECT_TEST = '''
import sys

def test_plain():
    assert "django" not in sys.modules, "dbguard imported Django in a project without it"
    # an idle install adds its options and nothing more: no rule, recorder or session module
    loaded = sorted(m for m in sys.modules if m.startswith("pytest_dbguard."))
    assert not [m for m in loaded if m.startswith(("pytest_dbguard.rules",
                                                    "pytest_dbguard.session",
                                                    "pytest_dbguard.recording",
                                                    "pytest_dbguard.events"))], loaded

def test_other():
    assert 1 + 1 == 2
'''


def _normalised(text: str) -> str:
    text = re.sub(r"in [0-9.]+s", "in Xs", text)
    text = re.sub(r"^plugins: .*$", "plugins: ...", text, flags=re.M)
    return re.sub(r"^rootdir: .*$", "rootdir: ...", text, flags=re.M)


def test_inert_in_a_project_without_django(pytester):
    pytester.makepyfile(test_plain=PLAIN_PROJECT_TEST)
    on = pytester.runpytest_subprocess("-p", "no:django", "-p", "no:cacheprovider")
    off = pytester.runpytest_subprocess("-p", "no:django", "-p", "no:dbguard",
                                        "-p", "no:cacheprovider")
    on.assert_outcomes(passed=2)
    off.assert_outcomes(passed=2)
    assert _normalised(on.stdout.str()) == _normalised(off.stdout.str())
    assert "dbguard" not in on.stdout.str().replace("dbguard-", "")


def test_inert_in_a_django_project_when_not_asked(djproject):
    djproject.write_test('''
        import pytest
        from shop.models import Author

        @pytest.mark.django_db
        def test_plain_django():
            for _ in range(50):
                Author.objects.count()
    ''')
    on = djproject.run()
    off = djproject.run(dbguard=False)
    on.assert_outcomes(passed=1)
    assert _normalised(on.stdout.str()) == _normalised(off.stdout.str())


def test_markers_without_django_explain_what_to_configure(pytester):
    pytester.makepyfile(test_nodjango='''
        import pytest

        @pytest.mark.query_budget(1)
        def test_budget():
            pass

        def test_fixture(dbguard):
            pass

        def test_unmarked():
            pass
    ''')
    result = pytester.runpytest_subprocess("-p", "no:django", "-p", "no:cacheprovider",
                                           "--dbguard")
    result.assert_outcomes(passed=1, failed=1, errors=1)  # the marker fails, the fixture errs
    message = ("dbguard needs Django: configure pytest-django (DJANGO_SETTINGS_MODULE in "
               "pytest.ini or the environment) before using dbguard markers or the dbguard "
               "fixture.")
    assert result.stdout.str().count(message) >= 2
    assert "Django is not configured in this run: nothing was recorded" in result.stdout.str()
