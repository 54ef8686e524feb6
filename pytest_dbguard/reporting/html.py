"""The --dbguard-html report: one self-contained page (no network), sortable, with SVG charts.

Rows are rendered here, so the table reads without JavaScript; the per-test drill-down is built
in the browser from one embedded JSON block, which keeps a 10k-test page small and fast to write.
A Content-Security-Policy forbids every network fetch, so the page cannot phone home even if a
test name or SQL text tried to.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from ..baseline import describe_growth
from . import write_atomic
from .entries import ReportEntry, RunResults, top_tests
from .html_assets import SCRIPT, STYLE

CHART_TESTS = 20
OUTCOME_RANK = {"passed": 0, "skipped": 1, "xfailed": 2, "xpassed": 3, "failed": 4, "error": 5}
# the call phase is what budgets and the baseline judge: it comes first
TABLE_PHASES = ("call", "setup", "teardown")
COLUMNS = (  # (header, sort type)
    ("Test", "text"), ("Outcome", "num"), ("Call", "num"), ("Setup", "num"),
    ("Teardown", "num"), ("Connections", "num"), ("Findings", "num"), ("Baseline", "num"),
)


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


# -- charts -----------------------------------------------------------------------------------

def _hbar_chart(title: str, rows: list[tuple[str, list[tuple[int, str]]]], label_width: int = 300,
                ) -> str:
    """Horizontal (stacked) bars: rows of (label, [(value, css class), ...])."""
    if not rows:
        return f'<figure class="chart"><figcaption>{_e(title)}</figcaption>' \
               f'<p class="empty">Nothing to show.</p></figure>'
    bar_h, gap, width, value_w = 18, 6, 640, 50
    height = len(rows) * (bar_h + gap) + gap
    biggest = max(sum(v for v, _ in parts) for _, parts in rows) or 1
    span = width - label_width - value_w
    out = [f'<figure class="chart"><figcaption>{_e(title)}</figcaption>'
           f'<svg role="img" aria-label="{_e(title)}" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}">']
    for i, (label, parts) in enumerate(rows):
        y = gap + i * (bar_h + gap)
        shown = label if len(label) <= 44 else "…" + label[-43:]
        out.append(f'<text class="label" x="{label_width - 8}" y="{y + 13}" '
                   f'text-anchor="end"><title>{_e(label)}</title>{_e(shown)}</text>')
        x = float(label_width)
        for value, css in parts:
            w = span * value / biggest
            if w > 0:
                out.append(f'<rect class="{css}" x="{x:.1f}" y="{y}" width="{w:.1f}" '
                           f'height="{bar_h}"><title>{_e(label)}: {value}</title></rect>')
            x += w
        total = sum(v for v, _ in parts)
        out.append(f'<text class="value" x="{x + 6:.1f}" y="{y + 13}">{total}</text>')
    out.append("</svg></figure>")
    return "".join(out)


def _histogram(entries: list[ReportEntry]) -> str:
    """Tests by call-phase query count, in power-of-two buckets: the shape of a whole suite."""
    edges = [(0, 0), (1, 1), (2, 3), (4, 7), (8, 15), (16, 31), (32, 63), (64, None)]
    counts = [0] * len(edges)
    for entry in entries:
        n = entry["queries"]["call"]
        for i, (low, high) in enumerate(edges):
            if n >= low and (high is None or n <= high):
                counts[i] += 1
                break
    title = "Tests by call-phase queries"
    width, height, left, bottom, top = 640, 220, 20, 30, 16
    slot = (width - left) / len(edges)
    biggest = max(counts) or 1
    out = [f'<figure class="chart"><figcaption>{title}</figcaption>'
           f'<svg role="img" aria-label="{title}" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}">',
           f'<line class="axis" x1="{left}" y1="{height - bottom}" x2="{width}" '
           f'y2="{height - bottom}"/>']
    for i, ((low, high), count) in enumerate(zip(edges, counts, strict=True)):
        label = f"{low}+" if high is None else (str(low) if low == high else f"{low}–{high}")
        h = (height - bottom - top) * count / biggest
        x = left + i * slot + 6
        y = height - bottom - h
        out.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{slot - 12:.1f}" '
                   f'height="{h:.1f}"><title>{label} queries: {count} tests</title></rect>')
        out.append(f'<text class="value" x="{x + (slot - 12) / 2:.1f}" y="{y - 4:.1f}" '
                   f'text-anchor="middle">{count}</text>')
        out.append(f'<text class="label" x="{x + (slot - 12) / 2:.1f}" y="{height - 10}" '
                   f'text-anchor="middle">{label}</text>')
    out.append("</svg></figure>")
    return "".join(out)


def _charts(results: RunResults, summary: dict[str, Any]) -> str:
    top = top_tests(results.entries, CHART_TESTS)
    queries = _hbar_chart(
        f"Queries per test (top {len(top)} by call phase)",
        [(e["nodeid"], [(e["queries"]["call"], "bar")]) for e in top])
    findings = _hbar_chart(
        "Findings by rule",
        [(rule, [(c.get("fail", 0), "fail"), (c.get("warn", 0), "warn"),
                 (c.get("allowed", 0), "allowed")])
         for rule, c in summary["findings"].items()],
        label_width=180)
    return f'<section class="charts">{queries}{findings}{_histogram(results.entries)}</section>'


# -- tables -----------------------------------------------------------------------------------

def _baseline_cells(results: RunResults) -> dict[str, tuple[Any, str]]:
    """nodeid -> (sort value, text) of the Baseline column."""
    comparison = results.comparison
    cells: dict[str, tuple[Any, str]] = {}
    if comparison is None:
        return cells
    for change in (comparison.regressions + comparison.allowed
                   + comparison.within_tolerance + comparison.improvements):
        delta = change.new - change.old
        cells[change.nodeid] = (delta, f"{change.old} → {change.new} ({delta:+d})")
    for label, changes in (("regression", comparison.regressions),
                           ("allowed", comparison.allowed)):
        for change in changes:
            delta = change.new - change.old
            cells[change.nodeid] = (delta, f"{change.old} → {change.new} ({delta:+d}) {label}")
    for nodeid in comparison.new_tests:
        cells[nodeid] = (0, "new")
    return cells


def _rows(results: RunResults) -> str:
    baseline = _baseline_cells(results)
    regressed = {c.nodeid for c in results.comparison.regressions} if results.comparison else set()
    rows = []
    for i, entry in enumerate(results.entries):
        nodeid, outcome = entry["nodeid"], entry.get("outcome") or "passed"
        findings = [f for f in entry["findings"] if not f.get("allowed")]
        failing = any(f["action"] == "fail" for f in findings)
        css = " ".join(c for c in (outcome, "dbguard-fail" if failing else "",
                                   "regressed" if nodeid in regressed else "") if c)
        q = entry["queries"]
        b_value, b_text = baseline.get(nodeid, ("", ""))
        rules = ", ".join(sorted({f["rule"] for f in findings}))
        rows.append(
            f'<tr class="{css}" data-i="{i}">'
            f'<td class="nodeid"><button type="button" class="toggle" aria-expanded="false">'
            f'{_e(nodeid)}</button></td>'
            f'<td data-v="{OUTCOME_RANK.get(outcome, 9)}"><span class="badge {outcome}">'
            f'{outcome}</span></td>'
            + "".join(f'<td class="n" data-v="{q[p]}">{q[p]}</td>' for p in TABLE_PHASES)
            + f'<td class="n" data-v="{entry["connections"]["opened"]}">'
              f'{entry["connections"]["opened"]}</td>'
            f'<td data-v="{len(findings)}" title="{_e(rules)}">{len(findings) or ""}'
            f'{" " + _e(rules) if rules else ""}</td>'
            f'<td data-v="{b_value}">{_e(b_text)}</td></tr>')
    return "".join(rows)


def _detail_data(results: RunResults) -> str:
    """One JSON block for every drill-down: built into DOM nodes only when a row is opened.

    Per test: "fp" the call-phase multiset (id -> count; the page orders it), "sites" the call
    sites of its top shapes, findings without their bulky evidence besides the shown lines.
    """
    sql = dict(results.sql)
    tests = []
    used: set[str] = set()
    for entry in results.entries:
        top = entry.get("top_fingerprints") or ()
        sites = {}
        for fp in top:
            sql.setdefault(fp["id"], fp["sql"])
            sites[fp["id"]] = [[s["site"], s["count"]] for s in fp["call_sites"]]
        multiset = entry.get("call_fingerprints")
        if multiset is None:
            multiset = {fp["id"]: fp["count"] for fp in top}
        used.update(multiset)
        findings = entry["findings"]
        tests.append({
            "fp": multiset,
            "sites": sites,
            "fi": [{"rule": f["rule"], "action": f["action"], "allowed": f.get("allowed"),
                    "phase": f.get("phase"), "message": f["message"],
                    "lines": f.get("evidence", {}).get("lines", []), "hint": f.get("hint")}
                   for f in findings] if findings else [],
            "alias": entry.get("by_alias", {}),
            "conn": entry["connections"].get("details", []),
        })
    data = {"tests": tests, "sql": {k: v for k, v in sorted(sql.items()) if k in used}}
    # "<" escaped: no SQL text or test name can close the script element
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def _grown_item(grown: dict[str, Any]) -> str:
    change = "new" if grown["old"] == 0 else f"{grown['old']} → {grown['new']}"
    sites = ", ".join(f"<code>{_e(site)}</code>" for site in grown["sites"][:3])
    return (f"<li>{change}: {grown['new']}× <code>{_e(grown['sql'])}</code>"
            + (f" at {sites}" if sites else "") + "</li>")


def _regressions(results: RunResults) -> str:
    comparison = results.comparison
    if comparison is None:
        return ""
    by_id = {e["nodeid"]: e for e in results.entries}
    head = (f'<section class="baseline"><h2>Baseline</h2><p>{len(comparison.regressions)} '
            f'regressions beyond tolerance {_e(comparison.tolerance)}'
            + (f' ({len(comparison.allowed)} more allowed)' if comparison.allowed else '')
            + ' · '
            f'{len(comparison.within_tolerance)} within tolerance · '
            f'{len(comparison.improvements)} improved · {len(comparison.new_tests)} new tests · '
            f'{comparison.unchanged} unchanged</p>')
    if not comparison.regressions:
        return head + "</section>"
    rows = []
    for change in comparison.regressions:
        shapes = "".join(_grown_item(g) for g in
                         describe_growth(change, by_id.get(change.nodeid), results.sql))
        rows.append(f'<tr><td class="nodeid">{_e(change.nodeid)}</td><td class="n">{change.old}'
                    f'</td><td class="n">{change.new}</td><td class="n">'
                    f'+{change.new - change.old}</td><td><ul>{shapes}</ul></td></tr>')
    return (head + '<table class="regressions"><thead><tr><th>Test</th><th>Baseline</th>'
            '<th>Now</th><th>Change</th><th>Query shapes that appeared or grew</th></tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table></section>')


def render(results: RunResults) -> str:
    summary = results.summary()
    q = summary["queries"]
    counts = summary["findings"].values()
    cards = [
        ("tests recorded", summary["tests"]),
        ("queries (call)", q["call"]),
        ("queries (setup + teardown)", q["setup"] + q["teardown"]),
        ("failing findings", sum(c.get("fail", 0) for c in counts)),
        ("warnings", sum(c.get("warn", 0) for c in counts)),
    ]
    if results.comparison is not None:
        cards.append(("regressions", len(results.comparison.regressions)))
    if results.shared_fixture_queries:
        cards.append(("shared-fixture queries", results.shared_fixture_queries))
    card_html = "".join(f'<div class="card"><b>{value}</b><span>{_e(label)}</span></div>'
                        for label, value in cards)
    notes = "".join(f"<li>{_e(note)}</li>" for note in results.notes)
    header = "".join(
        f'<th data-type="{kind}" aria-sort="none"><button type="button">{name}</button></th>'
        for name, kind in COLUMNS)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>pytest-dbguard report</title><style>{STYLE}</style></head><body>"
        f"<header><h1>pytest-dbguard</h1><div class=\"cards\">{card_html}</div></header>"
        + (f'<ul class="notes">{notes}</ul>' if notes else "")
        + _charts(results, summary) + _regressions(results)
        + '<section class="tests"><h2>Tests</h2><p class="help">Click a column to sort, a test '
          'to see its query shapes and findings.</p><input type="search" id="filter" '
          'placeholder="Filter tests by name" aria-label="Filter tests by name">'
          f'<table id="tests"><thead><tr>{header}</tr></thead><tbody>{_rows(results)}'
          '</tbody></table></section>'
          '<noscript><p>Sorting and the per-test details need JavaScript.</p></noscript>'
          f'<script type="application/json" id="dbguard-data">{_detail_data(results)}</script>'
          f"<script>{SCRIPT}</script></body></html>\n"
    )


def write(path: str, results: RunResults) -> None:
    write_atomic(path, render(results))
