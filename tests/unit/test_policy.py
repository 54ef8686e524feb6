"""Per-test policy: the one place where a rule's action on a test is settled."""

from __future__ import annotations

import pytest

from pytest_dbguard import policy
from pytest_dbguard.config import Settings
from pytest_dbguard.policy import TestFacts
from pytest_dbguard.rules import RuleRegistry, RuleSpec, builtin_registry

pytestmark = pytest.mark.unit

RULES = builtin_registry()
OPTIONS = RULES.option_defaults()
STRESSED = TestFacts(stressed=True)


def settings(enabled: bool = False, actions: dict[str, str] | None = None,
             compares: bool = False, **options) -> Settings:
    extra = {}
    if compares:
        from pytest_dbguard.baseline import Baseline
        from pytest_dbguard.rules.regression import Tolerance

        extra = {"baseline": Baseline(), "baseline_tolerance": Tolerance()}
    return Settings(enabled=enabled, rules=RULES, actions=actions or {},
                    rule_options={**OPTIONS, **options}, **extra)


def action(rule_id: str, s: Settings, facts: TestFacts = policy.RUN_WIDE) -> str:
    return policy.action_for(RULES[rule_id], s, facts)


@pytest.mark.parametrize("rule_id", [s.id for s in RULES])
def test_nothing_is_on_without_dbguard(rule_id):
    assert action(rule_id, settings()) == "off"


@pytest.mark.parametrize(("rule_id", "expected"), [
    ("budget", "fail"), ("nplusone", "fail"), ("nplusone-loop", "warn"), ("duplicate", "warn"),
    ("connection-leak", "fail"), ("slow-query", "warn"), ("deadlock", "fail"),
    ("lock-wait", "warn"), ("template-query", "off"), ("pgbouncer-unsafe", "off"),
    # switched rules stay off until their option names what to check
    ("missing-index", "off"), ("replica-write", "off"),
    # the baseline rule needs a baseline to compare with
    ("regression", "off"),
])
def test_dbguard_turns_on_each_rule_at_its_default(rule_id, expected):
    assert action(rule_id, settings(enabled=True)) == expected


@pytest.mark.parametrize(("rule_id", "option", "value", "expected"), [
    ("missing-index", "explain", True, "warn"),
    ("replica-write", "readonly_aliases", ("replica",), "fail"),
])
def test_an_option_naming_what_to_check_turns_its_rule_on(rule_id, option, value, expected):
    assert action(rule_id, settings(**{option: value})) == expected
    assert action(rule_id, settings(actions={rule_id: "off"}, **{option: value})) == "off"
    assert action(rule_id, settings(actions={rule_id: "fail"}, **{option: value})) == "fail"
    # explicitly on but nothing named: nothing to look at
    assert action(rule_id, settings(enabled=True, actions={rule_id: "warn"})) == "off"


@pytest.mark.parametrize("explicit", ["fail", "warn", "off"])
def test_an_explicit_action_beats_the_default(explicit):
    assert action("nplusone", settings(actions={"nplusone": explicit})) == explicit
    assert action("nplusone", settings(enabled=True, actions={"nplusone": explicit})) == explicit


@pytest.mark.parametrize(("rule_id", "marker"), [("budget", "query_budget"),
                                                 ("query-timeout", "query_timeout")])
def test_a_rule_marker_turns_its_rule_on_for_that_test(rule_id, marker):
    facts = TestFacts(markers=frozenset({marker}))
    assert action(rule_id, settings(), facts) == "fail"
    assert action(rule_id, settings(actions={rule_id: "warn"}), facts) == "warn"
    assert action(rule_id, settings(actions={rule_id: "off"}), facts) == "off"
    assert action(rule_id, settings(), TestFacts(markers=frozenset({"other"}))) == "off"


@pytest.mark.parametrize(("rule_id", "default"), [
    ("budget", "fail"), ("nplusone", "fail"), ("nplusone-loop", "warn"), ("duplicate", "warn"),
    ("slow-query", "warn")])
def test_stress_keeps_the_counting_rules_per_run_of_the_body(rule_id, default):
    # judged per thread-round (rules/threadrounds.py): the actions are those of any test
    assert action(rule_id, settings(enabled=True), STRESSED) == default
    assert action(rule_id, settings(enabled=True, actions={rule_id: "fail"}), STRESSED) == "fail"
    assert action(rule_id, settings(enabled=True, actions={rule_id: "off"}), STRESSED) == "off"


@pytest.mark.parametrize("rule_id", ["regression", "escaped-write"])
def test_stress_suspends_the_baseline_and_escaped_write_rules_even_when_set(rule_id):
    assert action(rule_id, settings(enabled=True, compares=True, actions={rule_id: "fail"}),
                  STRESSED) == "off"


@pytest.mark.parametrize(("rule_id", "expected"), [("deadlock", "fail"), ("lock-wait", "warn"),
                                                   ("stress-hang", "fail")])
def test_stress_turns_the_stress_rules_on(rule_id, expected):
    assert action(rule_id, settings(), STRESSED) == expected
    assert action(rule_id, settings(actions={rule_id: "off"}), STRESSED) == "off"
    assert action(rule_id, settings()) == "off"


def test_regression_follows_the_baseline_comparison():
    assert action("regression", settings(compares=True)) == "fail"
    assert action("regression", settings(compares=True, actions={"regression": "warn"})) == "warn"
    assert action("regression", settings(enabled=True, actions={"regression": "warn"})) == "off"
    assert action("regression", settings(compares=True), STRESSED) == "off"


def test_probes_follow_the_active_rules():
    assert policy.probes_needed(RULES, settings()) == frozenset()
    assert policy.probes_needed(RULES, settings(enabled=True)) == {
        "param-keys", "lifecycle", "psycopg", "census", "load-groups", "body-units",
        "commits", "locks", "eager-loads"}
    # load groups only for nplusone; the body's calls as units for the repeated-query rules
    no_nplusone = settings(enabled=True, actions={"nplusone": "off"})
    assert "load-groups" not in policy.probes_needed(RULES, no_nplusone)
    assert "body-units" in policy.probes_needed(RULES, no_nplusone)
    repeats_off = settings(enabled=True, actions={
        "nplusone": "off", "nplusone-loop": "off", "duplicate": "off",
        "unused-eager-load": "off"})
    assert policy.probes_needed(RULES, repeats_off) == {
        "lifecycle", "psycopg", "census", "commits", "locks"}
    assert policy.probes_needed(RULES, settings(explain=True)) == {"explain"}
    only_async = settings(actions={"async-orm": "warn"})
    assert policy.probes_needed(RULES, only_async) == {"lifecycle", "psycopg"}
    everything_off = settings(enabled=True, actions={s.id: "off" for s in RULES})
    assert policy.probes_needed(RULES, everything_off) == frozenset()
    templates = settings(actions={"template-query": "warn"})
    assert policy.probes_needed(RULES, templates) == {"templates"}


def test_a_custom_rule_follows_the_same_policy():
    registry = RuleRegistry()
    registry.add(RuleSpec("mine", "warn", "x", lambda r, c: (), builtin=False))
    s = Settings(enabled=True, rules=registry)
    assert policy.test_actions(registry, s) == {"mine": "warn"}
    s = Settings(enabled=False, rules=registry, actions={"mine": "fail"})
    assert policy.test_actions(registry, s, STRESSED) == {"mine": "fail"}
    assert policy.rule_markers(registry) == frozenset()
    assert policy.rule_markers(RULES) == {"query_budget", "query_timeout"}


def test_the_action_table_settles_each_set_of_facts_once(monkeypatch):
    table = policy.ActionTable(RULES, settings(enabled=False))
    calls: list[TestFacts] = []
    real = policy.test_actions

    def counting(registry, run_settings, facts=policy.RUN_WIDE):
        calls.append(facts)
        return real(registry, run_settings, facts)

    monkeypatch.setattr(policy, "test_actions", counting)
    budgeted = TestFacts(markers=frozenset({"query_budget"}))
    plain = table.for_test()
    assert plain == policy.test_actions(RULES, settings(enabled=False))
    assert table.for_test(budgeted)["budget"] == "fail"
    assert table.for_test()["budget"] == "off"
    assert table.for_test(TestFacts(markers=frozenset({"query_budget"})))["budget"] == "fail"
    # two distinct facts, each worked out once (the direct call above is the third)
    assert calls == [policy.RUN_WIDE, policy.RUN_WIDE, budgeted]
    # a test's actions are its own: changing them does not change the next test's
    plain["nplusone"] = "fail"
    assert table.for_test()["nplusone"] == "off"
