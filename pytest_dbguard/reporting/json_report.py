"""The --dbguard-json report: versioned schema, written atomically, read back into RunResults."""

from __future__ import annotations

import json
from typing import Any

from . import write_atomic
from .entries import SCHEMA, ReportEntry, RunResults, builtin_rule_table, summarise


class ReportError(Exception):
    """A JSON report that cannot be read back; the text says what is wrong (not where)."""


def build(entries: list[ReportEntry], shared_fixture_queries: int = 0,
          extra_summary: dict[str, Any] | None = None) -> dict[str, Any]:
    summary = summarise(entries, shared_fixture_queries)
    if extra_summary:
        summary.update(extra_summary)
    tests = sorted(entries, key=lambda e: e["nodeid"])
    return {"schema": SCHEMA, "summary": summary, "tests": tests}


def document(results: RunResults) -> dict[str, Any]:
    """The whole run: what every other report is rendered from, so `dbguard report` can too.

    Keys beyond schema/summary/tests were added in 0.1 for `dbguard combine`; readers of the
    first layout keep working.
    """
    meta = results.meta
    used = {fp_id for entry in results.entries for fp_id in entry.get("call_fingerprints", ())}
    head: dict[str, Any] = {"schema": SCHEMA}
    if results.interrupted:
        head["interrupted"] = True  # Ctrl-C: the tests below are those that ran before it
    return {
        **head,
        "plugin_version": meta.get("plugin_version"),
        "settings": meta.get("settings"),
        # every rule of the run, built-in and the project's own, in the order findings are
        # listed: what the other formats describe rules from when `dbguard report` renders them
        "rules": {rule_id: {"default": default, "summary": summary}
                  for rule_id, (default, summary) in results.rules.items()},
        "summary": results.summary(),
        "notes": list(results.session_notes),
        "crashed_workers": list(results.crashed_workers),
        # fingerprint id -> normalised SQL of the tests' call-phase shapes (what the baseline
        # and the reports name), sorted: shapes only session fixtures ran (CREATE DATABASE
        # test_x_gw0) depend on the process, not on the tests, and would make shards differ
        "sql": {fp_id: text for fp_id, text in sorted(results.sql.items()) if fp_id in used},
        "tests": sorted(results.entries, key=lambda e: e["nodeid"]),
    }


NEEDED = {"plugin_version": str, "settings": dict, "summary": dict, "notes": list,
          "crashed_workers": list, "sql": dict, "tests": list}


def results_from(data: Any) -> RunResults:
    """A document written by `document` back into RunResults, checked; ReportError otherwise.

    The baseline verdict is not read back: `dbguard report` judges the whole run again.
    """
    if not isinstance(data, dict):
        raise ReportError(f'is not a dbguard JSON report (expected an object with "schema": '
                          f'"{SCHEMA}")')
    if data.get("schema") != SCHEMA:
        raise ReportError(f"has schema {data.get('schema')!r}, expected {SCHEMA!r}")
    for key, kind in NEEDED.items():
        if not isinstance(data.get(key), kind):
            raise ReportError(
                f'has no "{key}" {kind.__name__}: it was written by an older pytest-dbguard; '
                f"rerun the tests with this version's --dbguard-json")
    for test in data["tests"]:
        if not isinstance(test, dict) or not isinstance(test.get("nodeid"), str):
            raise ReportError('has a test entry without a "nodeid"')
    summary = data["summary"]
    rules = data.get("rules")
    return RunResults(
        entries=sorted(data["tests"], key=lambda e: e["nodeid"]),
        shared_fixture_queries=int(summary.get("shared_fixture_queries", 0)),
        sql=dict(data["sql"]),
        missing_records=list(summary.get("missing_records", ())),
        crashed_workers=list(data["crashed_workers"]),
        session_notes=list(data["notes"]),
        interrupted=bool(data.get("interrupted")),
        meta={"plugin_version": data["plugin_version"], "settings": data["settings"]},
        rules=({rule_id: (str(rule["default"]), str(rule["summary"]))
                for rule_id, rule in rules.items()}
               if isinstance(rules, dict) else builtin_rule_table()),
    )


def dumps(document: dict[str, Any]) -> str:
    """Indented down to the summary, then one test per line.

    Readable and diff-friendly, and fast: json only uses its C encoder without `indent`, so each
    test is encoded compactly (10k tests: about 0.3 s instead of 2.4 s).
    """
    head = {key: value for key, value in document.items() if key != "tests"}
    text = json.dumps(head, indent=2, ensure_ascii=False)
    if "tests" not in document:
        return text + "\n"
    # one encoder for every line: json.dumps builds a new one per call when given options
    encode = json.JSONEncoder(ensure_ascii=False).encode
    tests = ",\n".join("    " + encode(test) for test in document["tests"])
    return (text[:-2] + ',\n  "tests": [' + ("\n" + tests + "\n  " if tests else "")
            + "]\n}\n")


def write(path: str, results: RunResults) -> None:
    write_atomic(path, dumps(document(results)))
