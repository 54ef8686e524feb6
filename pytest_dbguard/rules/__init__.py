"""The rule registry: what each rule declares about itself, and the pure evaluation of a record.

A rule is one `RuleSpec`: its id, default action, what recording it needs, its options with
their one default, how it behaves under stress, and its check. Built-in rules declare theirs with
`@rule(...)` next to their check; every rule, built-in or a project's own, reaches a run's
`RuleRegistry` through the `pytest_dbguard_register_rules` hook (see hookspecs.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..stress.facts import STRESS
from .registry import (  # noqa: F401  (the registry's public names)
    _BUILTIN,
    ACTIONS,
    JUDGE,
    PROBE_CENSUS,
    PROBE_COMMITS,
    PROBE_EAGER_LOADS,
    PROBE_EXPLAIN,
    PROBE_LIFECYCLE,
    PROBE_LOCKS,
    PROBE_PARAM_KEYS,
    PROBE_PSYCOPG,
    PROBE_TEMPLATES,
    RULE_ID_RE,
    STAGES,
    STRESS_ON,
    SUSPENDED,
    THREAD_ROUNDS,
    Check,
    RuleError,
    RuleOption,
    RuleRegistry,
    RuleSpec,
    TestContext,
    rule,
)

if TYPE_CHECKING:
    from ..events import Finding, TestRecord


# The built-in rule modules, in the order rules are judged and their findings listed.
BUILTIN_MODULES = ("budget", "escaped", "lifecycle", "swallowed", "async_orm", "pools", "nplusone",
                   "duplicate", "eager", "regression", "shape", "stress")


def builtin_specs() -> list[RuleSpec]:
    """The built-in rules, importing their modules on first use."""
    for name in BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{name}")
    # sorted by BUILTIN_MODULES, not by import order: config and `dbguard report` import the
    # regression module early when a baseline is given, and findings must not move with that
    rank = {f"{__name__}.{name}": at for at, name in enumerate(BUILTIN_MODULES)}
    return sorted(_BUILTIN, key=lambda spec: rank[spec.check.__module__])


def builtin_registry() -> RuleRegistry:
    registry = RuleRegistry()
    for spec in builtin_specs():
        registry.add(spec)
    return registry


def evaluate(record: TestRecord, context: TestContext, actions: Mapping[str, str],
             allowed: Mapping[str, str], stage: str = "call",
             registry: RuleRegistry | None = None,
             active: Sequence[tuple[RuleSpec, str]] | None = None) -> list[Finding]:
    """Run every rule whose action is not off; stamp each finding with action and allow reason.

    `actions` maps rule id -> fail|warn|off for this test; `allowed` maps rule id -> reason from
    dbguard_allow markers. Allowed findings are kept (reports show them) but never fail a test.
    """
    findings: list[Finding] = []
    ran_queries = bool(record.phase("call").rows)
    if active is None:
        active = active_rules(registry if registry is not None else builtin_registry(),
                              actions, stage)
    runs = None  # a stressed test's runs of the body, split on first use
    stressed = STRESS in record.facts
    for spec, action in active:
        if not ran_queries and spec.needs_call_queries:
            continue
        if stressed and spec.stress == THREAD_ROUNDS:
            from .threadrounds import judge_thread_rounds, thread_round_records

            if runs is None:
                runs = thread_round_records(record)
            produced: Iterable[Finding] = judge_thread_rounds(spec, record, context, runs)
        else:
            produced = spec.check(record, context)
            if not produced:  # the usual answer: an empty list or tuple
                continue
        for finding in produced:
            reason = allowed.get(spec.id)
            # A check may mark one finding milder than its rule (a deadlock the code retried is
            # a warning under a failing `deadlock` rule); the configured action still caps it.
            stamped = finding.action if _SEVERITY[finding.action] < _SEVERITY[action] else action
            findings.append(replace(finding, action=stamped, allowed_reason=reason))
    known = context.options.get("known_findings")
    if known:
        from .known import mark_known

        findings = mark_known(findings, known)
    return findings


_SEVERITY = {"off": 0, "warn": 1, "fail": 2}


def active_rules(registry: RuleRegistry, actions: Mapping[str, str],
                 stage: str) -> tuple[tuple[RuleSpec, str], ...]:
    """The rules judged at `stage` with their action, leaving out those that are off (what
    `evaluate` walks; a session works it out once per distinct set of actions)."""
    return tuple((spec, actions[spec.id]) for spec in registry.at_stage(stage)
                 if actions.get(spec.id, "off") != "off")


def __getattr__(name: str) -> Any:
    # RULES: the built-in rules by id, for code and tests that only need those
    if name == "RULES":
        return builtin_registry().specs
    raise AttributeError(name)
