"""--dbguard-sarif: SARIF 2.1.0 valid against the OASIS schema, one result per finding."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from pytest_dbguard.rules import RULES
from tests.report_scenario import BUDGET_SITE, GROWS_SITE, run_scenario

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-2.1.0.json").read_text())


def validate(document: dict) -> None:
    jsonschema.Draft4Validator.check_schema(SCHEMA)
    jsonschema.Draft4Validator(SCHEMA).validate(document)


def test_sarif_is_valid_and_has_one_located_result_per_finding(djproject):
    run_scenario(djproject, "--dbguard-sarif", "out.sarif", "--dbguard-json", "out.json")
    sarif = json.loads((djproject.path / "out.sarif").read_text())
    validate(sarif)
    report = json.loads((djproject.path / "out.json").read_text())
    (run,) = sarif["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "pytest-dbguard"
    assert [r["id"] for r in driver["rules"]] == sorted(RULES)
    regression_rule = driver["rules"][[r["id"] for r in driver["rules"]].index("regression")]
    assert regression_rule["shortDescription"]["text"] == RULES["regression"].summary
    assert regression_rule["defaultConfiguration"]["level"] == "error"

    findings = [(t["nodeid"], f["rule"]) for t in report["tests"] for f in t["findings"]]
    assert sorted(findings) == [("test_shop.py::test_allowed", "regression"),
                                ("test_shop.py::test_grows", "regression"),
                                ("test_shop.py::test_over_budget", "budget"),
                                # the same author each time: also a duplicate (a warning)
                                ("test_shop.py::test_over_budget", "duplicate"),
                                ("test_shop.py::test_over_budget", "nplusone")]
    results = {(r["properties"]["nodeid"], r["ruleId"]): r for r in run["results"]}
    assert sorted(results) == sorted(findings)

    budget = results[("test_shop.py::test_over_budget", "budget")]
    assert budget["level"] == "error"
    assert driver["rules"][budget["ruleIndex"]]["id"] == "budget"
    assert budget["message"]["text"].startswith(
        "test_shop.py::test_over_budget: query budget exceeded: 5 queries > budget 2")
    location = budget["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": "test_shop.py", "uriBaseId": "%SRCROOT%"}
    assert location["region"] == {"startLine": int(BUDGET_SITE.split(":")[1])}

    grows = results[("test_shop.py::test_grows", "regression")]
    region = grows["locations"][0]["physicalLocation"]["region"]
    assert region == {"startLine": int(GROWS_SITE.split(":")[1])}
    assert "suppressions" not in grows

    allowed = results[("test_shop.py::test_allowed", "regression")]
    assert allowed["suppressions"] == [
        {"kind": "inSource", "justification": "warm-up query, tracked in PR 12"}]
    # stable across runs: code scanning matches alerts by these
    assert len({r["partialFingerprints"]["dbguardFinding/v1"] for r in run["results"]}) == 5


def test_sarif_without_findings_is_valid_and_empty(djproject):
    djproject.write_test("""
        from shop.models import Author

        def test_fine(db):
            assert Author.objects.count() == 0
    """)
    djproject.run("--dbguard", "--dbguard-sarif", "out.sarif").assert_outcomes(passed=1)
    sarif = json.loads((djproject.path / "out.sarif").read_text())
    validate(sarif)
    assert sarif["runs"][0]["results"] == []


def test_schema_rejects_a_broken_document():
    """The validation above can fail: a result without a message is not SARIF."""
    broken = {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "x"}},
                                             "results": [{"ruleId": "budget"}]}]}
    try:
        validate(broken)
    except jsonschema.ValidationError as exc:
        assert "'message' is a required property" in str(exc)
    else:
        raise AssertionError("the SARIF schema accepted a result without a message")
