"""The terminal summary section: totals, findings by rule, the top warnings, top tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .entries import RunResults, top_tests

# At default verbosity: warnings are listed in full while that takes at most DETAIL_LINES
# lines, else as the top places per warning rule; and this many top tests.
DETAIL_LINES = 24
TOP_PER_RULE = 3
TOP_TESTS = 3
WHERE_FULL_LIST = ("  every warning: -v or --dbguard-verbose here, or a report file with "
                   "--dbguard-json / --dbguard-md / --dbguard-html PATH")


def summary_lines(results: RunResults, verbosity: int) -> list[str]:
    summary = results.summary()
    entries, shared_fixture_queries, notes = (results.entries, results.shared_fixture_queries,
                                              results.notes)
    warnings = [f for e in entries for f in e["findings"]
                if f["action"] == "warn" and not f.get("allowed")]
    q = summary["queries"]
    total = q["setup"] + q["call"] + q["teardown"]
    fails = sum(c.get("fail", 0) for c in summary["findings"].values())
    warns = sum(c.get("warn", 0) for c in summary["findings"].values())
    allowed = sum(c.get("allowed", 0) for c in summary["findings"].values())
    known = sum(c.get("known", 0) for c in summary["findings"].values())
    headline = (f"dbguard: {summary['tests']} tests recorded, {total} queries "
                f"(call {q['call']}, setup {q['setup']}, teardown {q['teardown']}), "
                f"{fails} failing findings, {warns} warnings")
    if known:
        headline += f", {known} known (in the findings baseline)"
    if allowed:
        headline += f", {allowed} allowed"
    if verbosity < 0:
        return [headline]
    lines = [headline]
    if shared_fixture_queries:
        lines.append(f"  queries in session/module-scoped fixtures (not charged to tests): "
                     f"{shared_fixture_queries}")
    if summary["findings"]:
        lines.append("  findings by rule:")
        for rule, counts in summary["findings"].items():
            parts = ", ".join(f"{n} {action}" for action, n in counts.items())
            lines.append(f"    {rule}: {parts}")
    if warnings:
        lines.append("  warnings:")
        detailed = _every_warning(warnings)
        full = verbosity > 0 or len(detailed) <= DETAIL_LINES
        lines.extend(detailed if full else _top_warnings(warnings))
    top = top_tests(entries)
    if top:
        lines.append("  top tests by call-phase queries:")
        for entry in top if verbosity > 0 else top[:TOP_TESTS]:
            lines.append(f"    {entry['queries']['call']:>6}  {entry['nodeid']}")
    lines.extend(f"  {note}" for note in notes)
    return lines


def _every_warning(warnings: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for finding in warnings:
        lines.append(f"    {finding['nodeid']}: [{finding['rule']}] {finding['message']}")
        for detail in finding.get("evidence", {}).get("lines", [])[:3]:
            lines.append(f"        {detail}")
        if finding.get("hint"):
            lines.append(f"        hint: {finding['hint']}")
    return lines


def place_of(finding: Mapping[str, Any]) -> str:
    """Where a warning points: its call site (the same site in many tests is one entry)."""
    evidence = finding.get("evidence", {})
    site = evidence.get("site") or (evidence.get("sites") or [None])[0]
    return f"{finding['rule']}|{site}" if site else f"{finding['rule']}|{finding['message']}"


def _top_warnings(warnings: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per rule, the places warned about in most tests: one line each, with counts."""
    by_rule: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for finding in warnings:
        by_rule.setdefault(finding["rule"], {}).setdefault(place_of(finding), []).append(finding)
    lines = []
    for rule in sorted(by_rule, key=lambda r: (-sum(map(len, by_rule[r].values())), r)):
        places = sorted(by_rule[rule].values(), key=lambda fs: (-len(fs), fs[0]["nodeid"]))
        for found in places[:TOP_PER_RULE]:
            first = found[0]
            tests = len({f["nodeid"] for f in found})
            more = f" (and {tests - 1} more tests)" if tests > 1 else ""
            lines.append(f"    {first['nodeid']}{more}: [{rule}] {first['message']}")
        if len(places) > TOP_PER_RULE:
            rest = places[TOP_PER_RULE:]
            lines.append(f"    ... [{rule}] {len(rest)} more places in "
                         f"{len({f['nodeid'] for fs in rest for f in fs})} tests")
    lines.append(WHERE_FULL_LIST)
    return lines
