"""The rule pass asks only the rules that have something to judge, in the stage they belong to."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_dbguard import rules
from pytest_dbguard.events import EMPTY_PHASES, Finding, TestRecord
from pytest_dbguard.rules import CALL_QUERY_RULES, RULES, TestContext, checks_for, evaluate


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every check replaced by a spy that notes its rule id and finds one thing."""
    seen: list[str] = []

    def spy(rule_id: str) -> Any:
        def check(record: TestRecord, context: TestContext) -> list[Finding]:
            seen.append(rule_id)
            return [Finding(rule=rule_id, nodeid=record.nodeid, phase="call", message="m")]
        return check

    spies = {rule_id: spy(rule_id) for rule_id in rules.load_checks()}
    monkeypatch.setattr(rules, "CHECKS", spies)
    monkeypatch.setattr(rules, "_by_stage", {})
    return seen


def record_with_call_rows(rows: tuple[Any, ...]) -> TestRecord:
    call = EMPTY_PHASES["call"]
    phase = type(call)(call.phase, len(rows), 0, (), 0.0, (), rows)
    return TestRecord(nodeid="t.py::test", phases={"call": phase})


def test_query_rules_are_not_asked_when_the_body_ran_no_statement(asked):
    actions = dict.fromkeys(RULES, "fail")
    found = evaluate(record_with_call_rows(()), TestContext(nodeid="t"), actions, {},
                     stage="call")
    expected = [r for r, _ in checks_for("call") if r not in CALL_QUERY_RULES]
    assert asked == expected
    assert [f.rule for f in found] == expected
    assert "nplusone" not in asked and "budget" not in asked


def test_every_call_rule_is_asked_once_a_statement_ran(asked):
    actions = dict.fromkeys(RULES, "fail")
    row = (0, 0, 0, 0.0, 0, 0, 0, None)
    evaluate(record_with_call_rows((row,)), TestContext(nodeid="t"), actions, {}, stage="call")
    assert asked == [r for r, _ in checks_for("call")]
    assert set(CALL_QUERY_RULES) <= set(asked)


def test_teardown_rules_are_judged_at_teardown_only(asked):
    actions = dict.fromkeys(RULES, "fail")
    evaluate(record_with_call_rows(()), TestContext(nodeid="t"), actions, {}, stage="teardown")
    assert asked == ["connection-leak", "open-transaction"]
    asked.clear()
    actions["connection-leak"] = "off"
    evaluate(record_with_call_rows(()), TestContext(nodeid="t"), actions, {}, stage="teardown")
    assert asked == ["open-transaction"]
