"""Option, ini and rule-registration errors, checked in-process before any test runs."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit

A_TEST = "def test_one():\n    pass\n"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_one=A_TEST)
    return pytester.runpytest_inprocess("-o", "asyncio_default_fixture_loop_scope=function", *args)


def usage_error(result: pytest.RunResult, message: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"ERROR: {message}" in result.stderr.str()


@pytest.mark.parametrize(("args", "message"), [
    (["--dbguard-nplusone-threshold", "1"],
     "dbguard: --dbguard-nplusone-threshold must be 2 or more, got 1."),
    (["--dbguard-slow-ms", "0"], "dbguard: --dbguard-slow-ms must be more than 0, got 0.0."),
    (["--dbguard-query-timeout-ms", "0"],
     "dbguard: --dbguard-query-timeout-ms must be more than 0, got 0."),
    (["--dbguard-max-connections", "-1"],
     "dbguard: --dbguard-max-connections must be 0 or more, got -1."),
    (["--dbguard-lock-wait-ms", "-5"],
     "dbguard: --dbguard-lock-wait-ms must be 0 or more, got -5."),
    (["--dbguard-readonly-alias", " "], "dbguard: --dbguard-readonly-alias needs an alias name."),
    (["--dbguard-rule", "budget="], "dbguard: --dbguard-rule expects ID=ACTION, got 'budget='."),
    (["--dbguard-rule", "=warn"], "dbguard: --dbguard-rule expects ID=ACTION, got '=warn'."),
    (["--dbguard-baseline-update"], "dbguard: --dbguard-baseline-update needs --dbguard-baseline "
     "PATH to say which file to use."),
])
def test_bad_options(pytester, args, message):
    usage_error(run(pytester, *args), message)


def test_good_options_run_the_tests(pytester):
    result = run(pytester, "--dbguard-rule", "budget=warn", "--dbguard-nplusone-threshold", "2",
                 "--dbguard-slow-ms", "5")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(("registration", "message"), [
    ('register("nplusone", check)', "dbguard: cannot register a rule: rule id 'nplusone' is "
     "already used by a built-in rule; pick another id."),
    ('register("Shop Rule", check)', "dbguard: cannot register a rule: invalid rule id "
     "'Shop Rule': use lowercase letters and digits"),
    ('register("shop-rule", check); register("shop-rule", check)', "dbguard: cannot register "
     "a rule: rule id 'shop-rule' is already used by another rule; pick another id."),
    ('register("shop-rule", check, default="error")', "dbguard: cannot register a rule: rule "
     "'shop-rule': default must be one of fail, warn, off, got 'error'."),
])
def test_bad_custom_rules_are_usage_errors(pytester, registration, message):
    pytester.makeconftest(f'''
        def check(test):
            return ()

        def pytest_dbguard_register_rules(register):
            {registration}
    ''')
    usage_error(run(pytester), message)


def test_custom_rule_ids_are_valid_in_options_and_ini(pytester):
    pytester.makeconftest('''
        def pytest_dbguard_register_rules(register):
            register("shop-rule", lambda test: ())
    ''')
    pytester.makeini("[pytest]\ndbguard_rules =\n    shop-rule=off\n")
    run(pytester, "--dbguard-rule", "shop-rule=fail").assert_outcomes(passed=1)
    result = run(pytester, "--dbguard-rule", "shop-rul=fail")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "unknown rule id 'shop-rul' in --dbguard-rule. Valid rule ids: " in result.stderr.str()
    assert "shop-rule" in result.stderr.str().split("Valid rule ids:")[1]


def test_help_quotes_the_rules_defaults(pytester):
    result = pytester.runpytest_inprocess("-o", "asyncio_default_fixture_loop_scope=function",
                                          "--help")
    out = " ".join(result.stdout.str().split())
    assert "a loop or a duplicate (default 3)" in out
    assert "taking at least MS milliseconds (default 100)" in out
    assert "thread is reported (default 200)" in out
