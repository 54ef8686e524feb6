"""The --dbguard-md report: a GitHub-flavoured Markdown summary for $GITHUB_STEP_SUMMARY or a PR."""

from __future__ import annotations

import re
from typing import Any

from ..baseline import describe_growth
from ..events import PHASES
from ..text import short_sql
from . import write_atomic
from .entries import RunResults, top_tests

# GitHub caps a step summary at 1 MiB: every list is cut to this many rows.
ROWS = 50
TOP_TESTS = 10

_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~])")


def text(value: Any) -> str:
    """Plain text for a Markdown table cell: no formatting, no HTML, no line breaks."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def code(value: Any) -> str:
    """An inline code span that survives backticks and pipes inside a table."""
    body = " ".join(str(value).split()).replace("|", "\\|")
    fence = "``" if "`" in body else "`"
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def _more(total: int, shown: int, what: str) -> list[str]:
    return ["", f"… and {total - shown} more {what} (see the JSON or HTML report)."] \
        if total > shown else []


def render(results: RunResults) -> str:
    summary = results.summary()
    q = summary["queries"]
    counts = summary["findings"].values()
    fails = sum(c.get("fail", 0) for c in counts)
    warns = sum(c.get("warn", 0) for c in counts)
    allowed = sum(c.get("allowed", 0) for c in counts)
    status = "❌" if fails or (results.comparison and results.comparison.regressions) else "✅"
    out = [
        f"## {status} pytest-dbguard",
        "",
        f"**{summary['tests']} tests recorded, {sum(q.values())} queries** "
        f"(call {q['call']}, setup {q['setup']}, teardown {q['teardown']}) · "
        f"**{fails} failing findings** · {warns} warnings"
        + (f" · {allowed} allowed" if allowed else "")
        + (f" · {summary['tests_failed_by_dbguard']} tests failed by dbguard"
           if summary["tests_failed_by_dbguard"] else ""),
    ]
    if results.shared_fixture_queries:
        out += ["", f"Queries in session/module-scoped fixtures (not charged to tests): "
                    f"{results.shared_fixture_queries}."]
    out += _baseline_section(results)
    out += _findings_section(results, summary)
    out += _top_tests_section(results)
    if results.missing_records or results.notes:
        out += ["", "### Notes", ""]
        out += [f"- {text(note)}" for note in results.notes]
    return "\n".join(out) + "\n"


def _baseline_section(results: RunResults) -> list[str]:
    comparison, update = results.comparison, results.baseline_update
    out: list[str] = []
    if update is not None:
        out += ["", "### Baseline updated", "",
                f"{len(update.added)} added, {len(update.changed)} changed, "
                f"{len(update.pruned)} pruned, {len(update.not_updated)} kept their old entry "
                f"(body did not run to the end)."]
    if comparison is None:
        return out
    out += ["", "### Query regressions against the baseline", "",
            f"**{len(comparison.regressions)} regressions** beyond tolerance "
            f"{text(comparison.tolerance)}"
            + (f" ({len(comparison.allowed)} more allowed by dbguard\\_allow)"
               if comparison.allowed else "")
            + f" · {len(comparison.within_tolerance)} within "
            f"tolerance · {len(comparison.improvements)} improved · "
            f"{len(comparison.new_tests)} new tests (not in the baseline) · "
            f"{comparison.unchanged} unchanged"]
    by_id = {e["nodeid"]: e for e in results.entries}
    if comparison.regressions:
        out += ["", "| Test | Baseline | Now | Change | Query shapes that appeared or grew |",
                "|---|---:|---:|---:|---|"]
        for change in comparison.regressions[:ROWS]:
            shapes = []
            for grown in describe_growth(change, by_id.get(change.nodeid), results.sql)[:5]:
                what = "new" if grown["old"] == 0 else f"{grown['old']} → {grown['new']}"
                where = (" at " + ", ".join(code(s) for s in grown["sites"][:3])
                         if grown["sites"] else "")
                shapes.append(f"{what}: {grown['new']}× {code(short_sql(grown['sql'], 100))}"
                              f"{where}")
            out.append(f"| {code(change.nodeid)} | {change.old} | {change.new} | "
                       f"+{change.new - change.old} | {'<br>'.join(shapes)} |")
        out += _more(len(comparison.regressions), ROWS, "regressions")
    if comparison.improvements:
        out += ["", f"<details><summary>{len(comparison.improvements)} tests run fewer "
                    f"queries than the baseline</summary>", "",
                "| Test | Baseline | Now |", "|---|---:|---:|"]
        out += [f"| {code(c.nodeid)} | {c.old} | {c.new} |"
                for c in comparison.improvements[:ROWS]]
        out += _more(len(comparison.improvements), ROWS, "improved tests")
        out += ["", "</details>"]
    if comparison.new_tests:
        out += ["", f"<details><summary>{len(comparison.new_tests)} new tests "
                    f"(not in the baseline)</summary>", ""]
        out += [f"- {code(nodeid)}: {by_id[nodeid]['queries']['call']} queries"
                for nodeid in comparison.new_tests[:ROWS]]
        out += _more(len(comparison.new_tests), ROWS, "new tests")
        out += ["", "</details>"]
    return out


def _findings_section(results: RunResults, summary: dict[str, Any]) -> list[str]:
    if not summary["findings"]:
        return []
    out = ["", "### Findings by rule", "", "| Rule | Failing | Warnings | Allowed |",
           "|---|---:|---:|---:|"]
    for rule, counts in summary["findings"].items():
        out.append(f"| {code(rule)} | {counts.get('fail', 0)} | {counts.get('warn', 0)} | "
                   f"{counts.get('allowed', 0)} |")
    listed = [(e["nodeid"], f) for e in results.entries for f in e["findings"]
              if not f.get("allowed") and f["action"] in ("fail", "warn")]
    if listed:
        out += ["", "| Test | Rule | Action | Finding |", "|---|---|---|---|"]
        for nodeid, finding in listed[:ROWS]:
            out.append(f"| {code(nodeid)} | {code(finding['rule'])} | {finding['action']} | "
                       f"{text(finding['message'])} |")
        out += _more(len(listed), ROWS, "findings")
    return out


def _top_tests_section(results: RunResults) -> list[str]:
    top = top_tests(results.entries, TOP_TESTS)
    if not top:
        return []
    out = ["", "### Top tests by call-phase queries", "",
           "| Test | " + " | ".join(p.capitalize() for p in PHASES) + " |",
           "|---|" + "---:|" * len(PHASES)]
    for entry in top:
        out.append(f"| {code(entry['nodeid'])} | "
                   + " | ".join(str(entry["queries"][p]) for p in PHASES) + " |")
    return out


def write(path: str, results: RunResults) -> None:
    write_atomic(path, render(results))
