"""The rule registry: what built-in rules declare, and what a registration may not do."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_dbguard.rules import (
    ACTIONS,
    JUDGE,
    STAGES,
    STRESS_ON,
    SUSPENDED,
    THREAD_ROUNDS,
    RuleError,
    RuleOption,
    RuleRegistry,
    RuleSpec,
    builtin_registry,
    builtin_specs,
)
from tests.docs_hooks import load_docs_hooks

pytestmark = pytest.mark.unit

BUILTIN = builtin_specs()


def noop(record, context):
    return ()


@pytest.mark.parametrize("spec", BUILTIN, ids=[s.id for s in BUILTIN])
def test_builtin_rule_declares_itself_fully(spec):
    assert spec.default_action in ACTIONS
    assert spec.stage in STAGES
    assert spec.stress in (JUDGE, THREAD_ROUNDS, SUSPENDED, STRESS_ON)
    assert spec.summary and spec.summary == spec.summary.strip()
    assert callable(spec.check) and spec.builtin
    # a switched rule reads its switch as one of its own options
    if spec.switch is not None:
        assert spec.switch in {o.name for o in spec.options}


def test_builtin_ids_are_unique_and_the_judging_order_is_stable():
    ids = [s.id for s in BUILTIN]
    assert len(ids) == len(set(ids)) == 21
    assert ids[:3] == ["budget", "escaped-write", "connection-leak"]
    assert ids[-3:] == ["deadlock", "lock-wait", "stress-hang"]


@pytest.mark.parametrize(("name", "default"), [
    ("nplusone_threshold", 3), ("slow_ms", 100.0), ("lock_wait_ms", 200),
    ("max_connections", None), ("readonly_aliases", ()), ("explain", False),
])
def test_every_option_default_is_declared_once_by_its_rules(name, default):
    assert builtin_registry().option_defaults()[name] == default


def test_stress_behaviour_is_declared_per_rule():
    by_stress = {}
    for spec in BUILTIN:
        by_stress.setdefault(spec.stress, set()).add(spec.id)
    assert by_stress[STRESS_ON] == {"deadlock", "lock-wait", "stress-hang"}
    # the counting rules judge each thread's run of the body in each round on its own
    assert by_stress[THREAD_ROUNDS] == {"budget", "nplusone", "nplusone-loop", "duplicate",
                                        "slow-query"}
    assert by_stress[SUSPENDED] == {"regression", "escaped-write", "unused-eager-load"}


@pytest.mark.parametrize("rule_id", [
    "mine", "shop-count-star", "shop_count", "acme.no-raw-sql", "r2d2", "a-1",
])
def test_valid_custom_ids(rule_id):
    registry = RuleRegistry()
    registry.add(RuleSpec(rule_id, "warn", "x", noop, builtin=False))
    assert rule_id in registry


@pytest.mark.parametrize("rule_id", [
    "", "Mine", "has space", "-lead", "trail-", "double--dash", "1abc", "ünï", "a/b", None, 3,
])
def test_invalid_ids_are_refused(rule_id):
    with pytest.raises(RuleError, match="invalid rule id"):
        RuleRegistry().add(RuleSpec(rule_id, "warn", "x", noop))


def test_a_clash_names_the_owner():
    registry = builtin_registry()
    with pytest.raises(RuleError, match="'nplusone' is already used by a built-in rule"):
        registry.add(RuleSpec("nplusone", "warn", "x", noop, builtin=False))
    registry.add(RuleSpec("mine", "warn", "x", noop, builtin=False))
    with pytest.raises(RuleError, match="'mine' is already used by another rule"):
        registry.add(RuleSpec("mine", "warn", "x", noop, builtin=False))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"default_action": "error"}, "default must be one of fail, warn, off"),
    ({"stage": "setup"}, "stage one of call, teardown"),
    ({"check": "not callable"}, "check must be callable"),
])
def test_bad_declarations_are_refused(kwargs, message):
    fields = {"id": "mine", "default_action": "warn", "summary": "x", "check": noop}
    fields.update(kwargs)
    with pytest.raises(RuleError, match=message):
        RuleRegistry().add(RuleSpec(**fields))


def test_an_option_has_one_default_across_rules():
    registry = RuleRegistry()
    registry.add(RuleSpec("one", "warn", "x", noop, options=(RuleOption("limit", 3),)))
    registry.add(RuleSpec("two", "warn", "x", noop, options=(RuleOption("limit", 3),)))
    with pytest.raises(RuleError, match="option 'limit' has default 4 but another rule"):
        registry.add(RuleSpec("three", "warn", "x", noop, options=(RuleOption("limit", 4),)))


def test_summaries_and_ids_are_data_for_reports():
    registry = builtin_registry()
    assert registry.ids() == sorted(s.id for s in BUILTIN)
    assert registry.summaries()["regression"] == "a test's queries grew beyond the baseline"
    assert len(registry) == 21 and [s.id for s in registry] == [s.id for s in BUILTIN]


def test_the_documented_rules_table_lists_every_builtin_rule_in_order_with_its_default():
    # the reference's table is rendered by docs/hooks.py at build time (mkdocs build --strict)
    hooks = load_docs_hooks()
    table = hooks.rules_table().splitlines()[2:]
    rows = []
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append((cells[0].split("`")[1], cells[1]))
    assert [rule_id for rule_id, _ in rows] == [s.id for s in BUILTIN]
    for (_, shown), spec in zip(rows, BUILTIN, strict=True):
        # a switched rule is off until its option names what to check
        assert shown.startswith(spec.default_action if spec.switch is None else "off; "), spec.id


def test_findings_order_does_not_depend_on_which_rule_module_was_imported_first():
    # the CLI and a baseline run import the regression module before the registry is built
    code = ("import pytest_dbguard.rules.regression, pytest_dbguard.rules.stress\n"
            "from pytest_dbguard.rules import builtin_specs\n"
            "print(' '.join(s.id for s in builtin_specs()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [s.id for s in BUILTIN]
    assert out[0] == "budget" and out.index("regression") < out.index("deadlock")
