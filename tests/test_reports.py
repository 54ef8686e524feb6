"""JSON report shape, junitxml properties, terminal summary, internal errors."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

TWO_TESTS = '''
import pytest
from shop.models import Author

@pytest.fixture
def author(db):
    return Author.objects.create(name="Le Guin")

@pytest.mark.query_budget(1)
def test_over(author, client):
    Author.objects.count()
    client.get("/books/")

def test_clean(author):
    assert Author.objects.filter(name="Le Guin").exists()
'''


def test_json_report_shape(djproject, backend):
    djproject.write_test(TWO_TESTS)
    path = djproject.path / "out" / "dbguard.json"
    path.parent.mkdir()
    result = djproject.run("--dbguard", "--dbguard-json", str(path))
    result.assert_outcomes(passed=1, failed=1)
    document = json.loads(path.read_text())
    assert list(document) == ["schema", "plugin_version", "settings", "rules", "summary",
                              "notes", "crashed_workers", "sql", "tests"]
    assert document["schema"] == "pytest-dbguard/1"
    # what `dbguard combine` checks shards agree on, and `dbguard report` renders from
    assert document["settings"]["enabled"] is True and document["settings"]["baseline"] is None
    assert (document["notes"], document["crashed_workers"]) == ([], [])
    # the run's rules in registry order, with their defaults: what `dbguard report` lists
    rules = document["rules"]
    assert list(rules)[:3] == ["budget", "escaped-write", "connection-leak"] and len(rules) == 21
    assert rules["nplusone-loop"] == {"default": "warn",
                                      "summary": "one query shape repeated from one call site "
                                                 "in a loop"}
    call_ids = {fp_id for test in document["tests"] for fp_id in test["call_fingerprints"]}
    assert len(call_ids) == 3 and call_ids <= set(document["sql"])
    assert list(document["sql"]) == sorted(document["sql"])
    assert document["sql"][next(fp["id"] for fp in document["tests"][0]["top_fingerprints"])] \
        == document["tests"][0]["top_fingerprints"][0]["sql"]
    summary = document["summary"]
    assert summary["tests"] == 2
    assert summary["queries"]["call"] == 3
    assert summary["findings"] == {"budget": {"fail": 1}}
    assert summary["tests_failed_by_dbguard"] == 1
    assert summary["vendors"] == [("postgresql" if backend == "postgres" else "sqlite")]
    clean, over = document["tests"]
    assert (clean["nodeid"], clean["outcome"]) == ("test_shop.py::test_clean", "passed")
    assert (over["nodeid"], over["outcome"]) == ("test_shop.py::test_over", "failed")
    assert over["queries"] == {"setup": 1, "call": 2, "teardown": over["queries"]["teardown"]}
    assert over["by_alias"]["default"]["call"] == 2
    assert set(over["connections"]) == {"opened", "still_open", "peak", "details"}
    [finding] = over["findings"]
    assert finding["rule"] == "budget" and finding["action"] == "fail"
    assert finding["phase"] == "call"
    assert finding["message"] == "query budget exceeded: 2 queries > budget 1 (alias default)"
    assert finding["evidence"]["count"] == 2 and finding["evidence"]["budget"] == 1
    sites = sorted(fp["call_sites"][0]["site"] for fp in over["top_fingerprints"])
    assert sites == ["shop/views.py:10", "test_shop.py:11"]
    assert sorted(s[0]["site"] for s in over["call_fingerprint_sites"].values()) == sites
    assert over["allowed_rules"] == {}
    # parameters are redacted by default: no example SQL with values
    assert all(fp["examples"] == [] for fp in over["top_fingerprints"])
    assert "Le Guin" not in path.read_text()
    assert not [p for p in path.parent.iterdir() if p.name != "dbguard.json"]  # no temp files


def test_show_params_keeps_examples(djproject):
    djproject.write_test(TWO_TESTS)
    path = djproject.path / "dbguard.json"
    djproject.run("--dbguard", "--dbguard-json", str(path), "--dbguard-show-params")
    document = json.loads(path.read_text())
    clean = document["tests"][0]
    [fingerprint] = clean["top_fingerprints"]
    assert fingerprint["examples"] == [
        'SELECT %s AS "a" FROM "shop_author" WHERE "shop_author"."name" = %s LIMIT 1'
        "  -- params (1, 'Le Guin')"]


def test_junitxml_properties(djproject):
    djproject.write_test(TWO_TESTS)
    djproject.run("--dbguard", "--junitxml", "junit.xml")
    tree = ET.parse(djproject.path / "junit.xml")
    props = {
        case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
        for case in tree.iter("testcase")
    }
    assert props["test_over"]["dbguard_queries_call"] == "2"
    assert props["test_over"]["dbguard_queries_setup"] == "1"
    assert props["test_over"]["dbguard_findings"] == "budget"
    assert props["test_clean"]["dbguard_queries_call"] == "1"
    assert "dbguard_findings" not in props["test_clean"]


def test_terminal_summary_and_quiet_mode(djproject):
    djproject.write_test(TWO_TESTS)
    result = djproject.run("--dbguard")
    result.stdout.fnmatch_lines([
        "*= dbguard =*",
        "dbguard: 2 tests recorded, * queries (call 3, setup 2, teardown *), "
        "1 failing findings, 0 warnings",
        "  findings by rule:",
        "    budget: 1 fail",
        "  top tests by call-phase queries:",
        "         2  test_shop.py::test_over",
        "         1  test_shop.py::test_clean",
    ])
    quiet = djproject.run("--dbguard", "-q")
    lines = [line for line in quiet.stdout.lines if "dbguard" in line and "recorded" in line]
    assert len(lines) == 1
    assert "top tests by call-phase queries" not in quiet.stdout.str()


def test_internal_error_is_reported_as_the_plugins(djproject):
    djproject.write("conftest.py", '''
        from pytest_dbguard.rules import budget

        def broken(*args, **kwargs):
            raise RuntimeError("boom in a rule")

        # a built-in rule's bug (unlike a custom rule's) is the plugin's internal error
        budget.describe_excess = broken
    ''')
    djproject.write_test(TWO_TESTS)
    result = djproject.run("--dbguard")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    out = result.stdout.str()
    assert "INTERNAL ERROR in pytest-dbguard: test_shop.py::test_over (call):" in out
    assert "RuntimeError: boom in a rule" in result.stdout.str()


def test_interrupted_run_writes_a_marked_report(djproject):
    djproject.write_test('''
        import pytest
        from shop.models import Author

        @pytest.mark.django_db
        def test_first():
            Author.objects.count()

        def test_interrupt():
            raise KeyboardInterrupt
    ''')
    path = djproject.path / "dbguard.json"
    path.write_text('{"previous": "report"}\n')
    result = djproject.run("--dbguard", "--dbguard-json", str(path))
    assert result.ret == pytest.ExitCode.INTERRUPTED
    document = json.loads(path.read_text())
    assert document["interrupted"] is True
    assert [t["nodeid"] for t in document["tests"]] == ["test_shop.py::test_first"]
    assert [p.name for p in djproject.path.glob(".dbguard-*")] == []
