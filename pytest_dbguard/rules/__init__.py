"""The rule registry and the pure evaluation of a TestRecord into findings with actions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the registry is read at start-up; rule modules load on first use
    from ..events import Finding, TestRecord

ACTIONS = ("fail", "warn", "off")


@dataclass(frozen=True)
class RuleSpec:
    id: str
    default_action: str
    summary: str
    # marker-driven rules fire whenever their marker is on a test, even without --dbguard
    marker: str | None = None
    # "call": judged when the test body returns (the test fails); "teardown": judged once
    # fixtures are torn down (reported as an error at teardown)
    stage: str = "call"


RULES: dict[str, RuleSpec] = {
    spec.id: spec
    for spec in (
        RuleSpec("budget", "fail", "call-phase queries exceed query_budget(n) or "
                 "--dbguard-max-queries", marker="query_budget"),
        RuleSpec("nplusone", "fail", "one query shape repeated by lazy relation access"),
        RuleSpec("nplusone-loop", "warn", "one query shape repeated from one call site in a loop"),
        RuleSpec("duplicate", "warn", "the same SQL with the same parameters repeated"),
        RuleSpec("connection-leak", "fail", "a connection opened by the test is still open",
                 stage="teardown"),
        RuleSpec("open-transaction", "fail", "a connection is left inside a transaction",
                 stage="teardown"),
        RuleSpec("swallowed-db-error", "fail", "a database error was caught inside atomic and "
                 "the transaction left unusable"),
        RuleSpec("async-orm", "fail", "a query ran on a thread with a running event loop"),
        RuleSpec("slow-query", "warn", "one query took longer than --dbguard-slow-ms"),
        RuleSpec("query-timeout", "fail", "a query was cancelled by query_timeout",
                 marker="query_timeout"),
        RuleSpec("deadlock", "fail", "PostgreSQL reported a deadlock"),
        RuleSpec("lock-wait", "warn", "a query waited on a lock too long"),
        RuleSpec("stress-hang", "fail", "a stress round did not finish in time"),
        RuleSpec("pool-exhausted", "fail", "connection pool or server connection limit reached"),
        RuleSpec("regression", "fail", "a test's queries grew beyond the baseline"),
        RuleSpec("missing-index", "off", "PostgreSQL plans a sequential scan with a filter"),
        RuleSpec("template-query", "off", "a query ran while a template was rendering"),
        RuleSpec("replica-write", "off", "a write ran on a read-only alias"),
        RuleSpec("pgbouncer-unsafe", "off", "session state that breaks under transaction pooling"),
    )
}


@dataclass(frozen=True)
class TestContext:
    """What a rule may know about a test besides its record: markers and options, resolved."""

    __test__ = False

    nodeid: str
    budget: Any = None  # markers.Budget | None
    max_queries: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


Check = Callable[["TestRecord", TestContext], Iterable["Finding"]]
# rule id -> check; rule families register themselves on import (see rules/budget.py)
CHECKS: dict[str, Check] = {}


def register(rule_id: str) -> Callable[[Check], Check]:
    if rule_id not in RULES:
        raise KeyError(rule_id)

    def decorate(check: Check) -> Check:
        CHECKS[rule_id] = check
        return check

    return decorate


def evaluate(record: TestRecord, context: TestContext, actions: Mapping[str, str],
             allowed: Mapping[str, str], stage: str = "call") -> list[Finding]:
    """Run every rule whose action is not off; stamp each finding with action and allow reason.

    `actions` maps rule id -> fail|warn|off for this test; `allowed` maps rule id -> reason from
    dbguard_allow markers. Allowed findings are kept (reports show them) but never fail a test.
    """
    findings: list[Finding] = []
    for rule_id, check in load_checks().items():
        action = actions.get(rule_id, "off")
        if action == "off" or RULES[rule_id].stage != stage:
            continue
        for finding in check(record, context):
            reason = allowed.get(rule_id)
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


_loaded = False


def load_checks() -> dict[str, Check]:
    """Import the rule modules (they register their checks) once, on first use.

    Not at import time: the registry above is all that option parsing needs, and an installed
    plugin nobody asked for must not pay for importing every rule family.
    """
    global _loaded
    if not _loaded:
        from . import budget, lifecycle, nplusone, regression, shape, stress  # noqa: F401

        _loaded = True
    return CHECKS
