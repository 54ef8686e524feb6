"""The baseline file and the regression rule as pure functions: no database, no pytest run."""

from __future__ import annotations

import json

import pytest

from pytest_dbguard import baseline
from pytest_dbguard.events import CallSite, Catalog, ConnInfo, TestRecord
from pytest_dbguard.recording.fingerprint import make_shape
from pytest_dbguard.recording.recorder import build_phase
from pytest_dbguard.rules import TestContext
from pytest_dbguard.rules.regression import (
    Tolerance,
    check_regression,
    grown_fingerprints,
    parse_tolerance,
)


def record_with(counts: dict[str, int]) -> TestRecord:
    """A call phase with `counts[sql]` queries of each SQL text, all from tests/test_x.py:7."""
    catalog = Catalog()
    catalog.sites.append(CallSite("tests/test_x.py", 7, "test_x"))
    catalog.conns.append(ConnInfo("default", "sqlite", "MainThread"))
    rows = []
    for sql, n in counts.items():
        catalog.shapes.append(make_shape(sql))
        rows += [(len(catalog.shapes) - 1, 0, 0, 0, 0, 0, 0.001, None)] * n
    return TestRecord("tests/test_x.py::test_x", {"call": build_phase("call", rows, {}, catalog)})


BOOKS = 'SELECT "id" FROM "book"'
AUTHOR = 'SELECT "name" FROM "author" WHERE "id" = 1'


def ids(record: TestRecord) -> dict[str, str]:
    return {fp.fingerprint: fp.fingerprint_id for fp in record.phase("call").fingerprints}


def test_rule_fires_with_grown_shape_and_site():
    old = record_with({BOOKS: 1, AUTHOR: 1})
    new = record_with({BOOKS: 1, AUTHOR: 3})
    entry = {"queries": 2, "fingerprints": {i: 1 for i in ids(old).values()}}
    (finding,) = check_regression(new, TestContext(new.nodeid, options={"baseline": entry}))
    assert finding.rule == "regression"
    assert finding.message == ("query count regressed against the baseline: 2 → 4 queries "
                               "(+2, tolerance 0)")
    assert finding.evidence["lines"] == [
        '1 → 3: 3× SELECT ... FROM "author" WHERE "id" = %s  at tests/test_x.py:7']
    assert finding.evidence["call_site"] == "tests/test_x.py:7"


@pytest.mark.parametrize(("old_count", "new_counts", "tolerance"), [
    (2, {BOOKS: 2}, Tolerance()),                  # same count
    (3, {BOOKS: 2}, Tolerance()),                  # fewer
    (2, {BOOKS: 3}, Tolerance(queries=1)),         # within N
    (10, {BOOKS: 11}, Tolerance(percent=10)),      # within P% (10% of 10 = 1)
])
def test_rule_near_misses(old_count, new_counts, tolerance):
    new = record_with(new_counts)
    entry = {"queries": old_count, "fingerprints": {}}
    context = TestContext(new.nodeid, options={"baseline": entry,
                                               "baseline_tolerance": tolerance})
    assert list(check_regression(new, context)) == []
    # and a test absent from the baseline is new, never a regression
    assert list(check_regression(new, TestContext(new.nodeid))) == []


def test_tolerance_parsing():
    assert parse_tolerance("0") == Tolerance()
    assert parse_tolerance(" 3 ") == Tolerance(queries=3)
    assert parse_tolerance("12.5%") == Tolerance(percent=12.5)
    assert Tolerance(percent=12.5).allowed(9) == 1
    assert Tolerance(percent=10).allowed(30) == 3  # no float rounding down to 2
    for bad in ("-1", "1.5", "x", "5 %%", ""):
        with pytest.raises(ValueError):
            parse_tolerance(bad)


def test_grown_fingerprints_order_and_new_shapes():
    assert grown_fingerprints({"a": 2, "b": 1}, {"a": 3, "b": 1, "c": 4, "d": 1}) == [
        ("c", 0, 4), ("a", 2, 3), ("d", 0, 1)]


def test_dumps_round_trips_and_sorts(tmp_path):
    original = baseline.Baseline(
        tests={"t.py::z": {"queries": 2, "fingerprints": {"b": 1, "a": 1}},
               "t.py::a": {"queries": 0, "fingerprints": {}}},
        sql={"a": "SELECT 1", "b": "SELECT \"é\"", "unused": "SELECT 2"})
    path = tmp_path / "b.json"
    baseline.write(str(path), original)
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[3:5] == [
        '    "t.py::a": {"fingerprints": {}, "queries": 0},',
        '    "t.py::z": {"fingerprints": {"a": 1, "b": 1}, "queries": 2}']
    assert "unused" not in text and '"SELECT \\"é\\""' in text
    loaded = baseline.load(str(path))
    assert loaded.tests == original.tests
    assert json.loads(baseline.dumps(baseline.Baseline())) == {
        "schema": baseline.SCHEMA, "tests": {}, "sql": {}}


def test_load_problems(tmp_path):
    with pytest.raises(baseline.BaselineError, match="is a directory"):
        baseline.load(str(tmp_path))
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(baseline.BaselineError, match="cannot be read"):
        baseline.load(str(binary))
    with pytest.raises(baseline.BaselineError, match='"sql" key'):
        baseline.from_document({"schema": baseline.SCHEMA, "tests": {}, "sql": {"a": 1}})
    with pytest.raises(baseline.BaselineError, match="no \"tests\" object"):
        baseline.from_document({"schema": baseline.SCHEMA})
    with pytest.raises(baseline.BaselineError, match="non-object entry"):
        baseline.from_document({"schema": baseline.SCHEMA, "tests": {"x": 3}})


def test_compare_and_update_classify_every_test():
    old = baseline.Baseline(tests={
        "t::grew": {"queries": 1, "fingerprints": {"a": 1}},
        "t::tolerated": {"queries": 10, "fingerprints": {"a": 10}},
        "t::better": {"queries": 3, "fingerprints": {"a": 3}},
        "t::crashed_half_way": {"queries": 3, "fingerprints": {"a": 3}},
        "t::same": {"queries": 1, "fingerprints": {"a": 1}},
        "t::not_run": {"queries": 1, "fingerprints": {"a": 1}},
    }, sql={"a": "SELECT a"})

    def entry(nodeid, fps, completed=True, outcome="passed"):
        return {"nodeid": nodeid, "queries": {"call": sum(fps.values())},
                "call_fingerprints": fps, "call_completed": completed, "outcome": outcome,
                "findings": []}

    entries = [entry("t::grew", {"a": 1, "b": 1}), entry("t::tolerated", {"a": 11}),
               entry("t::better", {"a": 1}), entry("t::crashed_half_way", {"a": 1}, False,
                                                    "failed"),
               entry("t::same", {"a": 1}), entry("t::fresh", {"b": 2})]
    result = baseline.compare(old, entries, Tolerance(percent=10))
    assert [(c.nodeid, c.old, c.new, c.grown) for c in result.regressions] == [
        ("t::grew", 1, 2, (("b", 0, 1),))]
    assert [c.nodeid for c in result.within_tolerance] == ["t::tolerated"]
    assert [c.nodeid for c in result.improvements] == ["t::better"]
    assert result.new_tests == ["t::fresh"]
    assert result.unchanged == 2  # same, and the half-run test (fewer queries, not better)

    new, update = baseline.updated(old, entries, {"b": "SELECT b"},
                                   selected={e["nodeid"] for e in entries}, prune=False)
    assert update.added == ["t::fresh"]
    assert update.changed == ["t::better", "t::grew", "t::tolerated"]
    assert update.not_updated == ["t::crashed_half_way"]
    assert new.tests["t::crashed_half_way"] == old.tests["t::crashed_half_way"]
    assert "t::not_run" in new.tests and new.sql == {"a": "SELECT a", "b": "SELECT b"}
    pruned, update = baseline.updated(old, entries, {}, selected={"t::same"}, prune=True)
    assert sorted(pruned.tests) == ["t::same"]
    assert "t::not_run" in update.pruned
