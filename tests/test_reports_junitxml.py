"""--junitxml: per-test query counts and finding ids as <property> elements, with and without -n."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from tests.report_scenario import run_scenario


@pytest.mark.parametrize("workers", ["0", "2"])
def test_junitxml_properties(djproject, workers):
    run_scenario(djproject, "--junitxml", "junit.xml", "-n", workers)
    tree = ET.parse(djproject.path / "junit.xml")
    props = {}
    for case in tree.iter("testcase"):
        props[case.get("name")] = {p.get("name"): p.get("value")
                                   for p in case.iter("property")}
    assert props["test_over_budget"]["dbguard_queries_call"] == "5"
    assert props["test_over_budget"]["dbguard_findings"] == "budget,duplicate,nplusone"
    assert props["test_grows"]["dbguard_queries_call"] == "2"
    assert props["test_grows"]["dbguard_findings"] == "regression"
    assert set(props["test_grows"]) == {"dbguard_queries_setup", "dbguard_queries_call",
                                        "dbguard_queries_teardown", "dbguard_findings"}
    # allowed findings do not fail the test and are not listed as its findings
    assert "dbguard_findings" not in props["test_allowed"]
    assert props["test_new"]["dbguard_queries_call"] == "1"
    assert int(props["test_grows"]["dbguard_queries_setup"]) > 0
