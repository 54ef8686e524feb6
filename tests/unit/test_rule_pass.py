"""The rule pass asks only the rules that have something to judge, in the stage they belong to."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from pytest_dbguard.events import EMPTY_PHASES, Finding, TestRecord
from pytest_dbguard.rules import RuleRegistry, TestContext, builtin_registry, evaluate

pytestmark = pytest.mark.unit

# the built-in rules that only read the call phase's statements (not pgbouncer-unsafe: it also
# reads the statements of raw psycopg connections, which a body without Django queries can run)
CALL_QUERY_RULES = {"budget", "nplusone", "nplusone-loop", "duplicate", "slow-query",
                    "template-query", "replica-write", "unused-eager-load"}


@pytest.fixture
def asked() -> tuple[RuleRegistry, list[str]]:
    """The built-in registry with every check replaced by a spy that notes its rule id."""
    seen: list[str] = []

    def spy(rule_id: str) -> Any:
        def check(record: TestRecord, context: TestContext) -> list[Finding]:
            seen.append(rule_id)
            return [Finding(rule=rule_id, nodeid=record.nodeid, phase="call", message="m")]
        return check

    registry = RuleRegistry()
    for spec in builtin_registry():
        registry.add(replace(spec, check=spy(spec.id)))
    return registry, seen


def record_with_call_rows(rows: tuple[Any, ...]) -> TestRecord:
    call = EMPTY_PHASES["call"]
    phase = type(call)(call.phase, len(rows), 0, (), 0.0, (), rows)
    return TestRecord(nodeid="t.py::test", phases={"call": phase})


def every(registry: RuleRegistry, action: str = "fail") -> dict[str, str]:
    return {spec.id: action for spec in registry}


def test_the_built_in_call_query_rules_are_declared_as_such():
    declared = {spec.id for spec in builtin_registry() if spec.needs_call_queries}
    assert declared == CALL_QUERY_RULES


def test_query_rules_are_not_asked_when_the_body_ran_no_statement(asked):
    registry, seen = asked
    found = evaluate(record_with_call_rows(()), TestContext(nodeid="t"), every(registry), {},
                     stage="call", registry=registry)
    expected = [s.id for s in registry.at_stage("call") if s.id not in CALL_QUERY_RULES]
    assert seen == expected
    assert [f.rule for f in found] == expected
    assert "nplusone" not in seen and "budget" not in seen and "async-orm" in seen


def test_every_call_rule_is_asked_once_a_statement_ran(asked):
    registry, seen = asked
    row = (0, 0, 0, 0.0, 0, 0, 0, None)
    evaluate(record_with_call_rows((row,)), TestContext(nodeid="t"), every(registry), {},
             stage="call", registry=registry)
    assert seen == [s.id for s in registry.at_stage("call")]
    assert set(seen) >= CALL_QUERY_RULES


def test_teardown_rules_are_judged_at_teardown_only(asked):
    registry, seen = asked
    actions = every(registry)
    evaluate(record_with_call_rows(()), TestContext(nodeid="t"), actions, {},
             stage="teardown", registry=registry)
    assert seen == ["connection-leak", "open-transaction"]
    seen.clear()
    actions["connection-leak"] = "off"
    evaluate(record_with_call_rows(()), TestContext(nodeid="t"), actions, {},
             stage="teardown", registry=registry)
    assert seen == ["open-transaction"]


def test_a_rule_added_later_joins_its_stage(asked):
    registry, seen = asked
    assert "mine" not in [s.id for s in registry.at_stage("call")]
    spec = replace(registry["async-orm"], id="mine", builtin=False)
    registry.add(spec)
    assert [s.id for s in registry.at_stage("call")][-1] == "mine"
    evaluate(record_with_call_rows(()), TestContext(nodeid="t"), every(registry), {},
             stage="call", registry=registry)
    assert seen[-1] == "async-orm"  # its check is async-orm's spy, asked a second time
    assert seen.count("async-orm") == 2
