"""One reporter protocol: the formats table, the summary computed once, the run's rule table."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from pytest_dbguard.reporting import FORMATS, write_atomic, write_requested
from pytest_dbguard.reporting import sarif as sarif_report
from pytest_dbguard.reporting.entries import RunResults
from pytest_dbguard.reporting.entries import test_entry as entry_of
from pytest_dbguard.rules import TestContext
from pytest_dbguard.rules.api import RuleTest
from tests.records import NODEID, TEST_SITE, RecordBuilder

pytestmark = pytest.mark.unit

COUNT = 'SELECT COUNT(*) AS "__count" FROM "shop_author"'


def results(**kwargs) -> RunResults:
    record = RecordBuilder().query(COUNT, site=TEST_SITE, times=2).build()
    test = RuleTest("shop-count", record, TestContext(NODEID))
    finding = test.finding("2 counts", queries=test.queries)
    entry = entry_of(record, [finding], 12.5, location=("tests/test_x.py", 3))
    entry["outcome"] = "passed"
    return RunResults(entries=[entry], **kwargs)


@pytest.mark.parametrize("report", FORMATS, ids=[f.name for f in FORMATS])
def test_every_format_implements_write_path_results(report, tmp_path):
    path = tmp_path / f"out.{report.name}"
    report.reporter().write(str(path), results())
    assert path.read_text().strip()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_only_requested_formats_are_written(tmp_path):
    settings = SimpleNamespace(json_path=str(tmp_path / "a.json"), md_path=None,
                               html_path=None, sarif_path=str(tmp_path / "a.sarif"))
    write_requested(settings, results())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.sarif"]


def test_the_summary_is_computed_once_and_shared(tmp_path):
    run = results()
    first = run.summary()
    assert run.summary() is first
    for report in FORMATS:
        report.reporter().write(str(tmp_path / report.name), run)
    document = json.loads((tmp_path / "json").read_text())
    assert document["summary"] == first
    assert list(document) == ["schema", "plugin_version", "settings", "rules", "summary",
                              "notes", "crashed_workers", "sql", "tests"]
    assert document["schema"] == "pytest-dbguard/1"
    # a finding not yet stamped by evaluate keeps Finding's default action
    assert first["findings"] == {"shop-count": {"fail": 1}}


def test_sarif_lists_the_runs_rules_with_their_defaults():
    run = results(rules={"shop-count": ("warn", "counting rows"), "budget": ("fail", "b")})
    document = sarif_report.build(run)
    rules = document["runs"][0]["tool"]["driver"]["rules"]
    assert [(r["id"], r["shortDescription"]["text"], r["defaultConfiguration"]["level"])
            for r in rules] == [("budget", "b", "error"), ("shop-count", "counting rows",
                                                          "warning")]
    [result] = document["runs"][0]["results"]
    assert result["ruleId"] == "shop-count"
    location = result["locations"][0]["physicalLocation"]
    assert location["region"] == {"startLine": 7}


def test_results_built_elsewhere_list_the_builtin_rules():
    assert len(RunResults(entries=[]).rules) == 21


def test_write_atomic_replaces_the_file_whole(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("old")
    write_atomic(str(path), "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["r.txt"]


def test_write_atomic_leaves_nothing_behind_on_failure(tmp_path):
    with pytest.raises(OSError):
        write_atomic(str(tmp_path), "x")  # a directory cannot be replaced by a file
    assert list(tmp_path.iterdir()) == []


def test_the_json_report_carries_the_runs_rules_back_to_dbguard_report(tmp_path):
    from pytest_dbguard.reporting import json_report

    rules = {"budget": ("fail", "b"), "shop-count": ("warn", "counting rows")}
    path = tmp_path / "run.json"
    json_report.write(str(path), results(rules=rules))
    document = json.loads(path.read_text())
    assert document["rules"] == {"budget": {"default": "fail", "summary": "b"},
                                 "shop-count": {"default": "warn", "summary": "counting rows"}}
    document["plugin_version"], document["settings"] = "0.1.0", {}
    back = json_report.results_from(document)
    assert back.rules == rules
    # the SARIF `dbguard report` writes describes the project's rule as the run's did
    driver = sarif_report.build(back)["runs"][0]["tool"]["driver"]
    assert ("shop-count", "counting rows") in [(r["id"], r["shortDescription"]["text"])
                                                for r in driver["rules"]]

