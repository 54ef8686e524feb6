"""The `regression` rule: a test's call-phase queries grew beyond its baseline entry."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ..events import Finding, PhaseRecord, TestRecord
from ..text import short_sql
from .registry import SUSPENDED, TestContext, rule

if TYPE_CHECKING:
    from ..reporting.entries import FindingEntry, ReportEntry

RULE_ID = "regression"

# How many grown query shapes a regression message lists before summarising the rest.
SHAPES_SHOWN = 8
SITES_SHOWN = 3

_TOLERANCE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True)
class Tolerance:
    """How much a test's query count may grow over its baseline: N queries or P percent."""

    queries: int = 0
    percent: float | None = None

    def allowed(self, old: int) -> int:
        """Extra queries allowed over a baseline of `old` (a percentage rounds down)."""
        if self.percent is not None:
            return math.floor(old * self.percent / 100.0 + 1e-9)
        return self.queries

    def __str__(self) -> str:
        if self.percent is not None:
            return f"{self.percent:g}%"
        return str(self.queries)


def parse_tolerance(text: str) -> Tolerance:
    """'3' -> 3 extra queries, '10%' -> 10 percent of the baseline count; ValueError otherwise."""
    match = _TOLERANCE_RE.match(str(text))
    if not match:
        raise ValueError(f"expected a whole number of queries (3) or a percentage (10%), "
                         f"got {text!r}")
    number, percent = match.groups()
    if percent:
        return Tolerance(percent=float(number))
    if "." in number:
        raise ValueError(f"a query tolerance is a whole number of queries, got {text!r}")
    return Tolerance(queries=int(number))


def regressed(old: int, new: int, tolerance: Tolerance) -> bool:
    return new > old + tolerance.allowed(old)


def grown_fingerprints(old: Mapping[str, int], new: Mapping[str, int]
                       ) -> list[tuple[str, int, int]]:
    """(fingerprint id, old count, new count) for every shape that appeared or grew.

    Ordered by growth, largest first, then by id, so messages and reports are stable.
    """
    grown = [(fp_id, old.get(fp_id, 0), count) for fp_id, count in new.items()
             if count > old.get(fp_id, 0)]
    grown.sort(key=lambda item: (-(item[2] - item[1]), item[0]))
    return grown


def call_multiset(phase: PhaseRecord) -> dict[str, int]:
    """The call phase's queries as fingerprint id -> count, transaction control left out."""
    return {fp.fingerprint_id: fp.count for fp in phase.fingerprints
            if not fp.is_transaction_control}


@rule(RULE_ID, "fail", "a test's queries grew beyond the baseline",
      needs_baseline=True, stress=SUSPENDED)
def check_regression(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    # options["baseline"] is this test's baseline entry ({"queries", "fingerprints"}); a test
    # absent from the baseline is new, and new tests pass.
    baseline: dict[str, Any] | None = context.options.get("baseline")
    if baseline is None:
        return ()
    tolerance: Tolerance = context.options.get("baseline_tolerance") or Tolerance()
    call = record.phase("call")
    shapes = {fp.fingerprint_id: (fp.fingerprint, [
        {"site": str(site) if site else None, "count": n} for site, n in fp.call_sites])
        for fp in call.fingerprints}
    finding = regression_finding(record.nodeid, baseline, call.query_count,
                                 call_multiset(call), shapes, tolerance)
    return () if finding is None else (finding,)


def regression_finding(nodeid: str, baseline: Mapping[str, Any], new: int,
                       multiset: Mapping[str, int],
                       shapes: Mapping[str, tuple[str, list[dict[str, Any]]]],
                       tolerance: Tolerance) -> Finding | None:
    """The finding for one test's call phase against its baseline entry, or None.

    Pure over plain data (`shapes`: fingerprint id -> (SQL, call sites)), so `dbguard report`
    judges the shards' JSON by exactly the rule a single run applies.
    """
    old = int(baseline["queries"])
    if not regressed(old, new, tolerance):
        return None
    grown = grown_fingerprints(baseline.get("fingerprints", {}), multiset)
    lines: list[str] = []
    details: list[dict[str, Any]] = []
    for fp_id, before, after in grown:
        fingerprint, sites = shapes.get(fp_id, ("", []))
        sites = [dict(s) for s in sites]
        details.append({"id": fp_id, "sql": fingerprint, "old": before, "new": after,
                        "call_sites": sites})
        if len(lines) >= SHAPES_SHOWN:
            continue
        change = "new" if before == 0 else f"{before} → {after}"
        site_text = ", ".join(
            f"{s['site'] or '?'}" + (f" ({s['count']}×)" if len(sites) > 1 else "")
            for s in sites[:SITES_SHOWN]
        ) + (", ..." if len(sites) > SITES_SHOWN else "")
        lines.append(f"{change}: {after}× {short_sql(fingerprint)}"
                     + (f"  at {site_text}" if site_text else ""))
    if len(grown) > SHAPES_SHOWN:
        lines.append(f"... and {len(grown) - SHAPES_SHOWN} more query shapes that appeared "
                     f"or grew")
    allowed = tolerance.allowed(old)
    message = (f"query count regressed against the baseline: {old} → {new} queries "
               f"(+{new - old}, tolerance {tolerance}"
               + (f" = {allowed} queries" if tolerance.percent is not None else "") + ")")
    first_site = next((s["site"] for d in details for s in d["call_sites"] if s["site"]), None)
    hint = ("remove the extra queries (select_related / prefetch_related, hoist lookups out "
            "of loops); if the new count is intended, accept it with "
            "--dbguard-baseline-update and commit the baseline file")
    return Finding(
        rule="regression",
        nodeid=nodeid,
        phase="call",
        message=message,
        hint=hint,
        evidence={
            "old": old,
            "new": new,
            "tolerance": str(tolerance),
            "allowed": allowed,
            "call_site": first_site,
            "fingerprints": details,
            "lines": lines,
        },
    )


def judge_entries(entries: Iterable[ReportEntry], baseline_tests: Mapping[str, Any],
                  tolerance: Tolerance, action: str, sql: Mapping[str, str]) -> None:
    """Apply the rule to finished JSON entries in place, as the run would have (`dbguard report`).

    The finding lands where evaluate() would have put it among the test's findings, and a
    failing one turns a passed test into a failed one, as the plugin does with the report.
    """
    from . import RULES

    if action == "off":
        return
    order = list(RULES)  # evaluate()'s order
    rank = order.index("regression")
    for entry in entries:
        old = baseline_tests.get(entry["nodeid"])
        if old is None or entry.get("stress") is not None:
            continue  # new test, or stressed (the run suspends the rule for those)
        sites = entry.get("call_fingerprint_sites", {})
        shapes = {fp_id: (sql.get(fp_id, ""), sites.get(fp_id, []))
                  for fp_id in entry.get("call_fingerprints", {})}
        finding = regression_finding(entry["nodeid"], old, entry["queries"]["call"],
                                     entry.get("call_fingerprints", {}), shapes, tolerance)
        if finding is None:
            continue
        reason = (entry.get("allowed_rules") or {}).get("regression")
        data = cast("FindingEntry", dict(finding.to_dict(), action=action, allowed=reason,
                                         nodeid=entry["nodeid"]))
        # a new list: an entry built in this process may share its empty one with others
        findings = entry["findings"] = list(entry["findings"])
        at = sum(1 for f in findings if f["rule"] in RULES
                 and RULES[f["rule"]].stage == "call" and order.index(f["rule"]) < rank)
        findings.insert(at, data)
        if action == "fail" and reason is None and entry.get("outcome") == "passed":
            entry["outcome"] = "failed"
