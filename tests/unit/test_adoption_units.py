"""Issue 11 over hand-built records: N+1 by load group, and findings a baseline already knows."""

from __future__ import annotations

import pytest

from pytest_dbguard.baseline import findings_of
from pytest_dbguard.events import QueryContext, Relation
from pytest_dbguard.reporting.entries import finding_entry
from pytest_dbguard.rules import builtin_registry, evaluate
from pytest_dbguard.rules.known import KNOWN_REASON, finding_key
from pytest_dbguard.rules.nplusone import check_nplusone
from tests.records import RecordBuilder, context

pytestmark = pytest.mark.unit

AUTHOR = 'SELECT "id", "name" FROM "shop_author" WHERE "id" = 1'
LAZY = QueryContext(relation=Relation("forward", "Book", "author", "Author", "shop_book"))


def lazy_loads(*groups: int) -> RecordBuilder:
    builder = RecordBuilder()
    for group in groups:
        builder.query(AUTHOR, context=LAZY, extra={"load": group} if group else None)
    return builder


def test_nplusone_fires_on_rows_of_one_queryset_loaded_one_by_one():
    [finding] = check_nplusone(lazy_loads(7, 7, 7).build(), context())
    assert finding.rule == "nplusone" and finding.evidence["count"] == 3
    assert finding.evidence["site_key"] == "shop/views.py::function"


@pytest.mark.parametrize("groups", [(1, 2, 3), (0, 0, 0), (7, 7)])
def test_nplusone_near_misses_instances_loaded_alone_or_too_few(groups):
    # (1, 2, 3): three get() calls; (0, 0, 0): created one by one; (7, 7): under the threshold
    assert list(check_nplusone(lazy_loads(*groups).build(), context())) == []


def test_a_known_finding_is_shown_but_does_not_fail_and_a_new_one_still_fails():
    record = lazy_loads(7, 7, 7).build()
    [finding] = check_nplusone(record, context())
    key = finding_key(finding.rule, finding.message, finding.evidence)
    registry = builtin_registry()
    actions = {spec.id: "off" for spec in registry} | {"nplusone": "fail"}
    [known] = evaluate(record, context(known_findings=frozenset({key})), actions, {},
                       registry=registry)
    assert known.allowed_reason == KNOWN_REASON
    [new] = evaluate(record, context(known_findings=frozenset({"nplusone other.py::f"})),
                     actions, {}, registry=registry)
    assert new.allowed_reason is None and new.action == "fail"
    # the key has no line number, so an edit that shifts lines keeps the finding known
    assert key == f"nplusone shop/views.py::function {finding.evidence['fingerprint_id']}"
    assert findings_of({"findings": [finding_entry(known)]}) == [key]


def _entry(nodeid, outcome, *findings, call_completed=True):
    return {"nodeid": nodeid, "outcome": outcome, "call_completed": call_completed,
            "findings": [dict(f) for f in findings]}


def _finding(rule, site, shape, action="fail"):
    return {"rule": rule, "action": action, "message": f"{rule} at {site}:12", "allowed": None,
            "evidence": {"site_key": site, "fingerprint_id": shape}}


def test_report_marks_findings_the_baseline_knows_and_the_test_passes_again():
    from pytest_dbguard.rules.known import mark_known_entries

    known = _finding("nplusone", "shop/views.py::index", "abc")
    new = _finding("nplusone", "shop/views.py::detail", "def")
    limit = _finding("budget", "shop/views.py::index", "abc")
    leak = _finding("connection-leak", "shop/jobs.py::run", "")
    entries = [
        _entry("t.py::test_known", "failed", known),
        _entry("t.py::test_new", "failed", known, new),
        _entry("t.py::test_budget", "failed", limit),
        _entry("t.py::test_body_raised", "failed", known, call_completed=False),
        _entry("t.py::test_leak", "error", leak),
    ]
    keys = {"findings": [finding_key(f["rule"], f["message"], f["evidence"])
                         for f in (known, limit, leak)]}
    baseline = {e["nodeid"]: keys for e in entries}
    mark_known_entries(entries, baseline)
    outcomes = {e["nodeid"]: e["outcome"] for e in entries}
    assert outcomes == {"t.py::test_known": "passed", "t.py::test_new": "failed",
                        "t.py::test_budget": "failed", "t.py::test_body_raised": "failed",
                        "t.py::test_leak": "error"}
    allowed = {e["nodeid"]: [f["allowed"] for f in e["findings"]] for e in entries}
    assert allowed["t.py::test_new"] == [KNOWN_REASON, None]
    assert allowed["t.py::test_budget"] == [None]  # a budget is never baselined
    assert allowed["t.py::test_leak"] == [KNOWN_REASON]


def test_report_leaves_tests_the_baseline_does_not_list_alone():
    from pytest_dbguard.rules.known import mark_known_entries

    entry = _entry("t.py::test_x", "failed", _finding("nplusone", "a.py::f", "abc"))
    mark_known_entries([entry], {"t.py::test_other": {"findings": ["nplusone a.py::f abc"]}})
    assert entry["outcome"] == "failed" and entry["findings"][0]["allowed"] is None
