"""Rule actions from the command line and ini, dbguard_allow, and bad input as UsageError."""

from __future__ import annotations

import json

import pytest

from pytest_dbguard.rules import RULES

VALID_IDS = ", ".join(sorted(RULES))

OVER_BUDGET = '''
import pytest
from shop.models import Author

@pytest.mark.django_db
@pytest.mark.query_budget(1)
def test_two():
    Author.objects.count()
    Author.objects.count()
'''


@pytest.mark.parametrize(("args", "message"), [
    (["--dbguard-rule", "nplusone"], "dbguard: --dbguard-rule expects ID=ACTION, got 'nplusone'. "
     f"Example: nplusone=warn. Rule ids: {VALID_IDS}."),
    (["--dbguard-rule", "n-plus-one=warn"], "dbguard: unknown rule id 'n-plus-one' in "
     f"--dbguard-rule. Valid rule ids: {VALID_IDS}."),
    (["--dbguard-rule", "budget=explode"], "dbguard: unknown action 'explode' for rule 'budget' "
     "in --dbguard-rule. Valid actions: fail, warn, off."),
    (["--dbguard-max-queries", "-3"], "dbguard: --dbguard-max-queries must be 0 or more, got -3."),
])
def test_bad_options_are_usage_errors(pytester, args, message):
    # in-process: options are checked before Django or any test is touched
    pytester.makepyfile(test_shop=OVER_BUDGET)
    result = pytester.runpytest_inprocess("-o", "asyncio_default_fixture_loop_scope=function",
                                          *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"ERROR: {message}" in result.stderr.str()
    assert "test_two" not in result.stdout.str()


def test_ini_rules_are_validated_too(pytester):
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n"
                     "dbguard_rules =\n    budget=warn\n    nope=fail\n")
    pytester.makepyfile(test_shop=OVER_BUDGET)
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (f"ERROR: dbguard: unknown rule id 'nope' in ini dbguard_rules. Valid rule ids: "
            f"{VALID_IDS}.") in result.stderr.str()


def test_cli_beats_ini_beats_default(djproject):
    djproject.write("pytest.ini", (djproject.path / "pytest.ini").read_text()
                    + "dbguard = true\ndbguard_rules =\n    budget=off\n")
    djproject.write_test(OVER_BUDGET)
    # ini turns the budget off: the over-budget test passes
    djproject.run().assert_outcomes(passed=1)
    # the command line turns it back on as a warning: passes, listed in the summary
    result = djproject.run("--dbguard-rule", "budget=warn")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "dbguard: 1 tests recorded, 3 queries (call 2, setup 0, teardown 1), "
        "0 failing findings, 1 warnings",
        "  warnings:",
        "    test_shop.py::test_two: [[]budget[]] query budget exceeded: 2 queries > budget 1 "
        "(alias default)",
    ])
    djproject.run("--dbguard-rule", "budget=fail").assert_outcomes(failed=1)


def test_allow_silences_a_rule_but_keeps_the_finding(djproject):
    djproject.write_test('''
        import pytest
        from shop.models import Author

        pytestmark = pytest.mark.dbguard_allow("budget", reason="legacy export, ticket SHOP-12")

        @pytest.mark.django_db
        @pytest.mark.query_budget(1)
        def test_two():
            Author.objects.count()
            Author.objects.count()
    ''')
    report = djproject.path / "report.json"
    result = djproject.run("--dbguard-json", str(report))
    result.assert_outcomes(passed=1)
    [test] = json.loads(report.read_text())["tests"]
    [finding] = test["findings"]
    assert (finding["rule"], finding["action"], finding["allowed"]) == (
        "budget", "fail", "legacy export, ticket SHOP-12")
    assert finding["message"] == "query budget exceeded: 2 queries > budget 1 (alias default)"


@pytest.mark.parametrize(("marker", "message"), [
    ('dbguard_allow("budget")', "invalid @pytest.mark.dbguard_allow: dbguard_allow() missing 1 "
     "required keyword-only argument: 'reason'."),
    ('dbguard_allow("budgit", reason="x")', "invalid @pytest.mark.dbguard_allow: unknown rule id "
     f"'budgit'; valid ids: {VALID_IDS}."),
    ('dbguard_allow(reason="x")', "invalid @pytest.mark.dbguard_allow: name at least one rule id "
     "to allow."),
    ('dbguard_allow("budget", reason=" ")', "invalid @pytest.mark.dbguard_allow: reason must be "
     "a non-empty string saying why the rule is silenced."),
])
def test_bad_allow_markers(djproject, marker, message):
    djproject.write_test(f'''
        import pytest

        @pytest.mark.{marker}
        @pytest.mark.query_budget(1)
        @pytest.mark.django_db
        def test_it():
            pass
    ''')
    result = djproject.run()
    result.assert_outcomes(failed=1)
    assert message in result.stdout.str()


def test_unwritable_report_path_is_a_usage_error(djproject):
    djproject.write_test(OVER_BUDGET)
    result = djproject.run("--dbguard-json", "/nonexistent-dir/report.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert ("dbguard: cannot write --dbguard-json '/nonexistent-dir/report.json': directory "
            "'/nonexistent-dir' does not exist.") in result.stderr.str()
    result = djproject.run("--dbguard-json", str(djproject.path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "is a directory; give a file path." in result.stderr.str()


def test_baseline_update_refuses_stress_mode(djproject):
    djproject.write_test(OVER_BUDGET)
    result = djproject.run("--dbguard-baseline", "baseline.json", "--dbguard-baseline-update",
                           "--dbguard-stress")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert ("ERROR: dbguard: --dbguard-baseline-update cannot be combined with --dbguard-stress"
            in result.stderr.str())
    assert not (djproject.path / "baseline.json").exists()
