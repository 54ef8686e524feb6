"""The terminal summary section: totals, findings by rule, top tests by queries."""

from __future__ import annotations

from .entries import RunResults, top_tests


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
    headline = (f"dbguard: {summary['tests']} tests recorded, {total} queries "
                f"(call {q['call']}, setup {q['setup']}, teardown {q['teardown']}), "
                f"{fails} failing findings, {warns} warnings")
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
        for finding in warnings:
            lines.append(f"    {finding['nodeid']}: [{finding['rule']}] {finding['message']}")
            for detail in finding.get("evidence", {}).get("lines", [])[:3]:
                lines.append(f"        {detail}")
            if finding.get("hint"):
                lines.append(f"        hint: {finding['hint']}")
    top = top_tests(entries)
    if top:
        lines.append("  top tests by call-phase queries:")
        for entry in top:
            lines.append(f"    {entry['queries']['call']:>6}  {entry['nodeid']}")
    lines.extend(f"  {note}" for note in notes)
    return lines
