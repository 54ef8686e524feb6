"""`dbguard` on bad input: one clear line and exit code 4 (2 for bad usage), 0 on a clean run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_dbguard.baseline import Baseline, Change, Comparison
from pytest_dbguard.reporting.entries import RunResults
from pytest_dbguard.reporting.run import failing
from pytest_dbguard.rules.regression import Tolerance, judge_entries
from tests.test_cli_shards import dbguard_cli

SUITE = """
from shop.models import Author


def test_count(db):
    assert Author.objects.count() == 0


def test_create(db):
    Author.objects.create(name="a")
"""


@pytest.fixture
def shards(djproject) -> Path:
    """Two clean shards of a two-test suite: shard-1.json and shard-2.json."""
    djproject.write_test(SUITE)
    for group, selection in ((1, "test_count"), (2, "test_create")):
        djproject.run("--dbguard", "--dbguard-json", f"shard-{group}.json", "-k",
                      selection).assert_outcomes(passed=1)
    return djproject.path


def edit(root: Path, source: str, target: str, change) -> None:
    document = json.loads((root / source).read_text())
    change(document)
    (root / target).write_text(json.dumps(document))


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 4, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("dbguard ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_clean_shards_combine_and_report_exit_0(shards):
    result = dbguard_cli(shards, "combine", "shard-1.json", "shard-2.json", "-o", "-")
    assert result.returncode == 0, result.stderr
    assert [t["nodeid"] for t in json.loads(result.stdout)["tests"]] == [
        "test_shop.py::test_count", "test_shop.py::test_create"]
    (shards / "merged.json").write_text(result.stdout)
    report = dbguard_cli(shards, "report", "merged.json", "--baseline", "base.json", "--update")
    assert report.returncode == 0, report.stderr
    assert report.stdout.splitlines()[0].startswith("dbguard: 2 tests recorded, ")
    assert json.loads((shards / "base.json").read_text())["tests"][
        "test_shop.py::test_count"]["queries"] == 1
    # the console script is the same command
    script = Path(sys.executable).with_name("dbguard")
    again = subprocess.run([str(script), "report", "merged.json", "--baseline", "base.json"],
                           cwd=shards, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    assert "0 regressions, 0 within tolerance 0, 0 improved, 0 new tests" in again.stdout


def test_missing_file(shards):
    result = dbguard_cli(shards, "combine", "shard-1.json", "shard-9.json", "-o", "out.json")
    assert_one_line_error(result, "shard-9.json: no such file")
    assert not (shards / "out.json").exists()
    assert_one_line_error(dbguard_cli(shards, "report", "nowhere.json"),
                          "nowhere.json: no such file")
    assert_one_line_error(dbguard_cli(shards, "combine", "--glob", "artifacts/*.json", "-o",
                                      "out.json"), "--glob 'artifacts/*.json' matches no file")


def test_corrupt_json(shards):
    text = (shards / "shard-2.json").read_text()
    (shards / "cut.json").write_text(text[: len(text) // 2])
    result = dbguard_cli(shards, "combine", "shard-1.json", "cut.json", "-o", "out.json")
    assert_one_line_error(result, "cut.json: is not valid JSON (line ")
    (shards / "list.json").write_text("[1, 2]")
    assert_one_line_error(dbguard_cli(shards, "report", "list.json"),
                          "list.json: is not a dbguard JSON report")


def test_mixed_versions(shards):
    edit(shards, "shard-2.json", "old.json",
         lambda d: d.update(plugin_version="0.0.9"))
    result = dbguard_cli(shards, "combine", "shard-1.json", "old.json", "-o", "out.json")
    assert_one_line_error(result, "shard-1.json was written by pytest-dbguard 0.1.0 but "
                                  "old.json by 0.0.9")
    # a report from before the combine keys existed
    edit(shards, "shard-2.json", "first.json",
         lambda d: [d.pop(key) for key in ("plugin_version", "settings", "sql")])
    assert_one_line_error(dbguard_cli(shards, "combine", "first.json", "-o", "out.json"),
                          'first.json: has no "plugin_version"', "older pytest-dbguard")
    edit(shards, "shard-2.json", "other.json", lambda d: d.update(schema="pytest-dbguard/2"))
    assert_one_line_error(dbguard_cli(shards, "combine", "other.json", "-o", "out.json"),
                          "other.json: has schema 'pytest-dbguard/2'")


def test_different_settings(shards):
    edit(shards, "shard-2.json", "strict.json",
         lambda d: d["settings"].update(nplusone_threshold=2, max_queries=10))
    result = dbguard_cli(shards, "combine", "shard-1.json", "strict.json", "-o", "out.json")
    assert_one_line_error(result, "shard-1.json and strict.json were run with different "
                                  "dbguard settings (max_queries, nplusone_threshold)")


def test_different_rules(shards):
    # one shard's conftest registered a rule the other's did not
    edit(shards, "shard-2.json", "custom.json", lambda d: d["rules"].update(
        {"shop-count-star": {"default": "warn", "summary": "COUNT(*) in the test body"}}))
    result = dbguard_cli(shards, "combine", "shard-1.json", "custom.json", "-o", "out.json")
    assert_one_line_error(result, "shard-1.json and custom.json were run with different rules "
                                  "(shop-count-star)", "pytest_dbguard_register_rules")


def test_duplicate_nodeid(shards):
    (shards / "again.json").write_text((shards / "shard-1.json").read_text())
    result = dbguard_cli(shards, "combine", "shard-1.json", "shard-2.json", "again.json",
                         "-o", "out.json")
    assert_one_line_error(result, "test test_shop.py::test_count is in both shard-1.json and "
                                  "again.json")
    # the same file named twice (a path and a glob) is read once, not a duplicate
    result = dbguard_cli(shards, "combine", "shard-1.json", "--glob", "shard-*.json", "-o", "-")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["tests"]) == 2


def test_bad_baseline_and_usage(shards):
    dbguard_cli(shards, "combine", "shard-1.json", "shard-2.json", "-o", "merged.json")
    (shards / "base.json").write_text('{"schema": "x"}')
    assert_one_line_error(dbguard_cli(shards, "report", "merged.json", "--baseline",
                                      "base.json"), "baseline file base.json: has schema 'x'")
    assert_one_line_error(dbguard_cli(shards, "report", "merged.json", "--baseline",
                                      "none.json"), "baseline file none.json: does not exist; "
                                                    "create it with dbguard report --update")
    assert_one_line_error(dbguard_cli(shards, "report", "merged.json", "--baseline",
                                      "base.json", "--tolerance", "lots"), "--tolerance: ")
    for args in (["combine", "-o", "x.json"], ["report", "merged.json", "--update"],
                 ["frobnicate"], []):
        result = dbguard_cli(shards, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert "usage: dbguard" in result.stderr


def test_regression_finding_lands_where_the_run_puts_it():
    def finding(rule: str, phase: str = "call") -> dict[str, object]:
        return {"rule": rule, "action": "fail", "phase": phase, "message": rule, "hint": "",
                "evidence": {}, "allowed": None, "nodeid": "t.py::t"}

    entry = {"nodeid": "t.py::t", "outcome": "failed", "queries": {"call": 3},
             "call_fingerprints": {"a": 2, "b": 1}, "stress": None, "allowed_rules": {},
             "call_fingerprint_sites": {"a": [{"site": "t.py:4", "count": 2}]},
             "findings": [finding("budget"), finding("nplusone"),
                          finding("connection-leak", "teardown")]}
    judge_entries([entry], {"t.py::t": {"queries": 1, "fingerprints": {"a": 1}}},
                  Tolerance(), "fail", {"a": "SELECT a", "b": "SELECT b"})
    assert [f["rule"] for f in entry["findings"]] == ["budget", "nplusone", "regression",
                                                      "connection-leak"]
    regression = entry["findings"][2]
    # equal growth: by fingerprint id; a shape without recorded call sites has no "at"
    assert regression["evidence"]["lines"] == ["1 → 2: 2× SELECT a  at t.py:4",
                                               "new: 1× SELECT b"]
    assert regression["evidence"]["call_site"] == "t.py:4"
    # allowed: kept for the reports, never failing the test or the gate
    allowed = {"nodeid": "u.py::u", "outcome": "passed", "queries": {"call": 2},
               "call_fingerprints": {"a": 2}, "stress": None, "findings": [],
               "allowed_rules": {"regression": "warm-up"}}
    judge_entries([allowed], {"u.py::u": {"queries": 1, "fingerprints": {"a": 1}}},
                  Tolerance(), "fail", {})
    assert allowed["outcome"] == "passed"
    assert allowed["findings"][0]["allowed"] == "warm-up"
    assert not failing(RunResults(entries=[allowed]))
    assert failing(RunResults(entries=[entry]))
    clean = RunResults(entries=[], comparison=Comparison(Tolerance()))
    assert not failing(clean)
    clean.comparison.regressions.append(Change("v.py::v", 1, 2))
    assert failing(clean)
    assert Baseline().tests == {}
