"""A project's own rule from conftest.py (the documented example), configured like ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# The documentation's example (docs/custom-rules.md), word for word.
CONFTEST = '''
def no_count_star(test):
    """COUNT(*) queries in the test body: use .exists() when presence is all that matters."""
    counts = [q for q in test.queries if q.phase == "call" and "COUNT(*)" in q.fingerprint]
    if counts:
        yield test.finding(
            f"{len(counts)} COUNT(*) queries in the test body",
            hint="use .exists() when you only need to know whether rows exist",
            queries=counts,
        )


def pytest_dbguard_register_rules(register):
    register("shop-count-star", no_count_star, default="warn",
             description="COUNT(*) queries in the test body")
'''

COUNTS_AND_EXISTS = '''
import pytest
from shop.models import Author

@pytest.mark.django_db
def test_counts():
    Author.objects.count()
    Author.objects.count()

@pytest.mark.django_db
def test_exists():
    Author.objects.exists()
'''
TESTS = COUNTS_AND_EXISTS + '''
@pytest.mark.django_db
@pytest.mark.dbguard_allow("shop-count-star", reason="the count is the point")
def test_allowed():
    Author.objects.count()
'''
COUNT_SITE = "test_shop.py:7"


def findings_of(document: dict) -> dict[str, list[dict]]:
    return {t["nodeid"].split("::")[1]: t["findings"] for t in document["tests"]}


def test_custom_rule_fires_is_allowed_and_appears_in_every_report(djproject):
    djproject.write("conftest.py", CONFTEST)
    djproject.write_test(TESTS)
    result = djproject.run("--dbguard", "--dbguard-json", "out.json", "--dbguard-sarif",
                           "out.sarif", "--dbguard-md", "out.md")
    result.assert_outcomes(passed=3)
    assert result.ret == pytest.ExitCode.OK
    document = json.loads((djproject.path / "out.json").read_text())
    found = findings_of(document)
    assert found["test_exists"] == []
    [finding] = found["test_counts"]
    assert (finding["rule"], finding["action"], finding["phase"]) == (
        "shop-count-star", "warn", "call")
    assert finding["message"] == "2 COUNT(*) queries in the test body"
    assert finding["hint"] == "use .exists() when you only need to know whether rows exist"
    assert finding["evidence"]["call_sites"] == [COUNT_SITE, "test_shop.py:8"]
    assert finding["allowed"] is None
    [allowed] = found["test_allowed"]
    assert (allowed["rule"], allowed["allowed"]) == ("shop-count-star", "the count is the point")
    assert document["summary"]["findings"] == {"shop-count-star": {"allowed": 1, "warn": 1}}
    assert "[shop-count-star] 2 COUNT(*) queries in the test body" in result.stdout.str()

    sarif = json.loads((djproject.path / "out.sarif").read_text())
    (run,) = sarif["runs"]
    rules = {r["id"]: r for r in run["tool"]["driver"]["rules"]}
    assert rules["shop-count-star"]["shortDescription"]["text"] == (
        "COUNT(*) queries in the test body")
    assert rules["shop-count-star"]["defaultConfiguration"]["level"] == "warning"
    results = {r["properties"]["nodeid"]: r for r in run["results"]
               if r["ruleId"] == "shop-count-star"}
    assert sorted(results) == ["test_shop.py::test_allowed", "test_shop.py::test_counts"]
    region = results["test_shop.py::test_counts"]["locations"][0]["physicalLocation"]["region"]
    assert region == {"startLine": 7}
    assert "suppressions" in results["test_shop.py::test_allowed"]

    md = (djproject.path / "out.md").read_text()
    assert "| `shop-count-star` | 0 | 1 | 1 |" in md
    assert ("| `test_shop.py::test_counts` | `shop-count-star` | warn | "
            "2 COUNT(\\*) queries in the test body |") in md


def test_custom_rule_action_from_command_line_and_ini(djproject):
    djproject.write("conftest.py", CONFTEST)
    djproject.write_test(TESTS)
    result = djproject.run("--dbguard", "--dbguard-rule", "shop-count-star=fail")
    result.assert_outcomes(passed=2, failed=1)
    assert "[dbguard:shop-count-star] 2 COUNT(*) queries in the test body" in result.stdout.str()
    assert "FAILED test_shop.py::test_counts" in result.stdout.str()

    ini = djproject.path / "pytest.ini"
    ini.write_text(ini.read_text() + "dbguard_rules =\n    shop-count-star=off\n")
    result = djproject.run("--dbguard", "--dbguard-json", "off.json")
    result.assert_outcomes(passed=3)
    document = json.loads((djproject.path / "off.json").read_text())
    assert document["summary"]["findings"] == {}


def test_a_custom_check_that_raises_is_that_rules_finding_not_an_internal_error(djproject):
    djproject.write("conftest.py", '''
        def broken(test):
            yield test.finding("never", queries=test.queries)
            raise ZeroDivisionError("rule bug")

        def pytest_dbguard_register_rules(register):
            register("shop-broken", broken, default="fail")
    ''')
    djproject.write_test(COUNTS_AND_EXISTS)
    result = djproject.run("--dbguard", "--dbguard-json", "out.json")
    result.assert_outcomes(failed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "INTERNAL ERROR" not in result.stdout.str()
    document = json.loads((djproject.path / "out.json").read_text())
    [finding] = findings_of(document)["test_exists"]
    assert finding["rule"] == "shop-broken" and finding["action"] == "fail"
    assert finding["message"] == (
        "the check of rule 'shop-broken' raised an error: ZeroDivisionError: rule bug")
    assert finding["hint"].startswith("fix conftest.broken")



@pytest.mark.unit
def test_the_documented_example_is_the_one_tested_here():
    page = (Path(__file__).parent.parent / "docs" / "custom-rules.md").read_text()
    example = page.split("```python\n# conftest.py\n", 1)[1].split("```", 1)[0]
    assert example.strip() == CONFTEST.strip()
