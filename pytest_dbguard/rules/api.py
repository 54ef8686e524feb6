"""The public rule API: the read-only view of a test that a project's own rule checks."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import Any

from ..events import PHASES, Finding, Query, TestRecord
from ..text import short_sql
from .registry import ACTIONS, Check, RuleError, RuleRegistry, RuleSpec, TestContext

QUERIES_SHOWN = 10


class RuleTest:
    """One recorded test as a custom rule sees it; build findings with `finding()`."""

    __test__ = False

    def __init__(self, rule_id: str, record: TestRecord, context: TestContext) -> None:
        self._rule_id = rule_id
        self._record = record
        self._context = context

    @property
    def nodeid(self) -> str:
        return self._record.nodeid

    @cached_property
    def queries(self) -> tuple[Query, ...]:
        """Every query of the test, setup then call: the records the `dbguard` fixture gives."""
        return tuple(q for name in PHASES for q in self._record.phase(name).queries())

    def phase_queries(self, phase: str) -> tuple[Query, ...]:
        """The queries of one phase: "setup", "call" or "teardown"."""
        return tuple(q for q in self.queries if q.phase == phase)

    def finding(self, headline: str, *, hint: str = "", queries: Iterable[Query] = ()
                ) -> Finding:
        """A finding of this rule; the queries given become its evidence and call sites."""
        shown = list(queries)
        lines = [f"{q.alias}: {short_sql(q.fingerprint)}"
                 + (f"  at {q.call_site}" if q.call_site else "") for q in shown[:QUERIES_SHOWN]]
        if len(shown) > QUERIES_SHOWN:
            lines.append(f"... and {len(shown) - QUERIES_SHOWN} more queries")
        evidence: dict[str, Any] = {
            "lines": lines,
            "call_sites": list(dict.fromkeys(str(q.call_site) for q in shown if q.call_site)),
            "queries": [{"fingerprint": q.fingerprint, "alias": q.alias, "phase": q.phase,
                         "call_site": str(q.call_site) if q.call_site else None}
                        for q in shown],
        }
        phase = shown[0].phase if shown else "call"
        return Finding(rule=self._rule_id, nodeid=self.nodeid, phase=phase,
                       message=str(headline), hint=hint, evidence=evidence)


CustomCheck = Callable[[RuleTest], Iterable[Finding] | None]


def adapt(rule_id: str, check: CustomCheck) -> Check:
    """A custom check as the registry runs it: an exception becomes this rule's finding."""
    where = f"{getattr(check, '__module__', '?')}.{getattr(check, '__qualname__', check)}"

    def run(record: TestRecord, context: TestContext) -> list[Finding]:
        test = RuleTest(rule_id, record, context)
        try:
            found = list(check(test) or ())
            for finding in found:
                if not isinstance(finding, Finding) or finding.rule != rule_id:
                    raise TypeError(f"it yielded {finding!r}; yield test.finding(...) instead")
        except Exception as exc:
            tail = traceback.format_exception_only(type(exc), exc)[-1].strip()
            return [Finding(
                rule=rule_id, nodeid=record.nodeid, phase="call",
                message=f"the check of rule {rule_id!r} raised an error: {tail}",
                hint=f"fix {where}: a rule's check must only yield test.finding(...)",
                evidence={"error": tail, "check": where,
                          "lines": traceback.format_exc().rstrip().splitlines()[-6:]})]
        return found

    return run


class Registrar:
    """What `pytest_dbguard_register_rules(register)` receives."""

    def __init__(self, registry: RuleRegistry) -> None:
        self.registry = registry

    def __call__(self, rule_id: str, check: CustomCheck, *, default: str = "warn",
                 description: str = "") -> None:
        """Add a rule whose `check(test)` yields `test.finding(...)` for a recorded test."""
        if default not in ACTIONS:
            raise RuleError(f"rule {rule_id!r}: default must be one of {', '.join(ACTIONS)}, "
                            f"got {default!r}")
        if not callable(check):
            raise RuleError(f"rule {rule_id!r}: check must be a function taking the test")
        summary = description or (check.__doc__ or "").strip().split("\n")[0] or rule_id
        self.registry.add(RuleSpec(rule_id, default, summary, adapt(rule_id, check),
                                   builtin=False))

    def spec(self, spec: RuleSpec) -> None:
        """Add a rule declared in full (how the built-in rules register)."""
        self.registry.add(spec)
