"""The query baseline file (schema pytest-dbguard-baseline/1): load, compare, update, write.

The file is meant to be committed: one test per line, keys sorted, no timings, no absolute
paths, so a pull request's diff shows exactly which tests changed their queries.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .reporting import write_atomic
from .rules.known import KNOWN_REASON, NOT_BASELINED, key_of
from .rules.regression import RULE_ID, Tolerance, grown_fingerprints, regressed

SCHEMA = "pytest-dbguard-baseline/1"


class BaselineError(Exception):
    """The baseline file cannot be used; the text says what is wrong with it (not where)."""


@dataclass
class Baseline:
    """nodeid -> {"queries": n, "fingerprints": {id: count}}, and fingerprint id -> SQL shape."""

    tests: dict[str, dict[str, Any]] = field(default_factory=dict)
    sql: dict[str, str] = field(default_factory=dict)


def load(path: str) -> Baseline:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise BaselineError("does not exist; create it with --dbguard-baseline-update") from None
    except IsADirectoryError:
        raise BaselineError("is a directory, not a baseline file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise BaselineError(f"cannot be read ({reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(f"is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                            f"{exc.msg})") from None
    return from_document(data)


def from_document(data: Any) -> Baseline:
    """Validate a parsed baseline document; BaselineError names the first problem found."""
    if not isinstance(data, dict):
        raise BaselineError(f"must be a JSON object with \"schema\": \"{SCHEMA}\"")
    schema = data.get("schema")
    if schema != SCHEMA:
        found = f"schema {schema!r}" if schema is not None else "no \"schema\" key"
        raise BaselineError(f"has {found}, expected \"{SCHEMA}\" (a file written by another "
                            f"tool or version; rewrite it with --dbguard-baseline-update)")
    tests = data.get("tests")
    if not isinstance(tests, dict):
        raise BaselineError("has no \"tests\" object")
    for nodeid, entry in tests.items():
        _check_entry(nodeid, entry)
    sql = data.get("sql", {})
    if not isinstance(sql, dict) or not all(isinstance(v, str) for v in sql.values()):
        raise BaselineError("has a \"sql\" key that is not an object of fingerprint id -> SQL")
    return Baseline(tests=tests, sql=sql)


def _check_entry(nodeid: str, entry: Any) -> None:
    where = f"test {nodeid!r}"
    if not isinstance(entry, dict):
        raise BaselineError(f"has a non-object entry for {where}")
    queries = entry.get("queries")
    if not _count(queries, minimum=0):
        raise BaselineError(f"has no whole, non-negative \"queries\" count for {where}")
    fingerprints = entry.get("fingerprints")
    if not isinstance(fingerprints, dict) or not all(
        isinstance(k, str) and _count(v, minimum=1) for k, v in fingerprints.items()
    ):
        raise BaselineError(f"has no \"fingerprints\" object of id -> positive count for "
                            f"{where}")
    findings = entry.get("findings", [])
    if not isinstance(findings, list) or not all(isinstance(k, str) for k in findings):
        raise BaselineError(f"has a \"findings\" key that is not a list of finding keys for "
                            f"{where}")


def _count(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def dumps(baseline: Baseline) -> str:
    """One test per line, sorted: the diff of a pull request shows the tests that changed."""
    lines = ["{", f'  "schema": {json.dumps(SCHEMA)},', '  "tests": {']
    tests = [
        f"    {json.dumps(nodeid, ensure_ascii=False)}: "
        + json.dumps(_entry_document(entry), ensure_ascii=False)
        for nodeid, entry in sorted(baseline.tests.items())
    ]
    if tests:
        lines.append(",\n".join(tests))
    lines.extend(["  },", '  "sql": {'])
    used = {fp_id for entry in baseline.tests.values() for fp_id in entry["fingerprints"]}
    sql = [
        f"    {json.dumps(fp_id)}: {json.dumps(text, ensure_ascii=False)}"
        for fp_id, text in sorted(baseline.sql.items()) if fp_id in used
    ]
    if sql:
        lines.append(",\n".join(sql))
    lines.extend(["  }", "}"])
    return "\n".join(lines) + "\n"


def _entry_document(entry: Mapping[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = {"fingerprints": dict(sorted(entry["fingerprints"].items()))}
    if entry.get("findings"):
        # known findings: rule, call site file::function, query shape (see rules.known)
        document["findings"] = sorted(set(entry["findings"]))
    document["queries"] = entry["queries"]
    return document


def write(path: str, baseline: Baseline) -> None:
    write_atomic(path, dumps(baseline))


# -- comparing a run with the baseline --------------------------------------------------------

@dataclass(frozen=True)
class Change:
    """One test whose call-phase query count differs from its baseline entry."""

    nodeid: str
    old: int
    new: int
    grown: tuple[tuple[str, int, int], ...] = ()  # (fingerprint id, old count, new count)

    def to_dict(self) -> dict[str, Any]:
        return {"nodeid": self.nodeid, "old": self.old, "new": self.new,
                "grown": [{"id": i, "old": o, "new": n} for i, o, n in self.grown]}


@dataclass
class Comparison:
    tolerance: Tolerance
    regressions: list[Change] = field(default_factory=list)
    # beyond tolerance, but the test carries dbguard_allow(RULE_ID, reason=...)
    allowed: list[Change] = field(default_factory=list)
    within_tolerance: list[Change] = field(default_factory=list)
    improvements: list[Change] = field(default_factory=list)
    new_tests: list[str] = field(default_factory=list)
    unchanged: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "tolerance": str(self.tolerance),
            "regressions": [c.nodeid for c in self.regressions],
            "allowed_regressions": [c.nodeid for c in self.allowed],
            "within_tolerance": len(self.within_tolerance),
            "improved": len(self.improvements),
            "new_tests": len(self.new_tests),
            "unchanged": self.unchanged,
        }


def compare(baseline: Baseline, entries: Iterable[Mapping[str, Any]],
            tolerance: Tolerance) -> Comparison:
    """The run against the baseline, by the same judgement as the regression rule.

    Improvements and new tests only count tests whose body ran to the end: a test that failed
    half-way ran fewer queries without getting any better.
    """
    result = Comparison(tolerance)
    for entry in sorted(entries, key=lambda e: e["nodeid"]):
        nodeid, completed = entry["nodeid"], entry.get("call_completed", True)
        old_entry = baseline.tests.get(nodeid)
        new = entry["queries"]["call"]
        if old_entry is None:
            if completed:
                result.new_tests.append(nodeid)
            continue
        old = old_entry["queries"]
        change = Change(nodeid, old, new, tuple(grown_fingerprints(
            old_entry["fingerprints"], entry.get("call_fingerprints", {}))))
        if regressed(old, new, tolerance):
            allowed = any(f["rule"] == RULE_ID and f.get("allowed")
                          for f in entry.get("findings", ()))
            (result.allowed if allowed else result.regressions).append(change)
        elif new > old:
            result.within_tolerance.append(change)
        elif new < old and completed:
            result.improvements.append(change)
        else:
            result.unchanged += 1
    return result


# -- updating ---------------------------------------------------------------------------------

@dataclass
class Update:
    """What --dbguard-baseline-update changed, for the summary."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    not_updated: list[str] = field(default_factory=list)  # recorded, but the body did not finish

    def summary(self) -> dict[str, Any]:
        return {"added": len(self.added), "changed": len(self.changed),
                "pruned": len(self.pruned), "not_updated": self.not_updated}


def updated(baseline: Baseline, entries: Iterable[Mapping[str, Any]], sql: Mapping[str, str],
            selected: set[str] | None = None, prune: bool = False) -> tuple[Baseline, Update]:
    """The baseline with this run's counts merged in.

    Tests this run did not record keep their entries (a subset run never deletes anything);
    tests whose body did not run to the end (skipped, errored, crashed) keep their old entry.
    With `prune`, entries of tests this run did not select are dropped.
    """
    tests = {nodeid: dict(entry) for nodeid, entry in baseline.tests.items()}
    change = Update()
    for entry in sorted(entries, key=lambda e: e["nodeid"]):
        nodeid = entry["nodeid"]
        if not entry.get("call_completed", True) or entry.get("outcome") == "skipped":
            change.not_updated.append(nodeid)
            continue
        new_entry: dict[str, Any] = {"queries": entry["queries"]["call"],
                                     "fingerprints": dict(entry.get("call_fingerprints", {}))}
        found = findings_of(entry)
        if found:
            new_entry["findings"] = found
        old = tests.get(nodeid)
        if old is None:
            change.added.append(nodeid)
        elif (old["queries"], old["fingerprints"], sorted(old.get("findings", ()))) != (
                new_entry["queries"], new_entry["fingerprints"], found):
            change.changed.append(nodeid)
        tests[nodeid] = new_entry
    if prune and selected is not None:
        for nodeid in sorted(tests):
            if nodeid not in selected:
                del tests[nodeid]
                change.pruned.append(nodeid)
    # the SQL of a shape this run saw wins; a shape only older runs saw keeps its old text
    known = dict(baseline.sql)
    known.update(sql)
    used = {fp_id for entry in tests.values() for fp_id in entry["fingerprints"]}
    return Baseline(tests=tests, sql={k: v for k, v in known.items() if k in used}), change


def findings_of(entry: Mapping[str, Any]) -> list[str]:
    """Keys of a test's findings for the baseline: all but those a marker allowed."""
    return sorted({key_of(f) for f in entry.get("findings", ())
                   if f["rule"] not in NOT_BASELINED
                   and (not f.get("allowed") or f["allowed"] == KNOWN_REASON)})


def describe_growth(change: Change, entry: Mapping[str, Any] | None,
                    sql: Mapping[str, str]) -> list[dict[str, Any]]:
    """The grown shapes of one regression with their SQL and call sites, for the reports.

    Call sites come from the test's `regression` finding (or its top fingerprints when the rule
    was off); the SQL from what the run saw.
    """
    known: dict[str, dict[str, Any]] = {}
    if entry is not None:
        for fp in entry.get("top_fingerprints", ()):
            known[fp["id"]] = {"sql": fp["sql"], "sites": [
                s["site"] for s in fp.get("call_sites", ()) if s.get("site")]}
        for finding in entry.get("findings", ()):
            if finding["rule"] != RULE_ID:
                continue
            for fp in finding.get("evidence", {}).get("fingerprints", ()):
                known[fp["id"]] = {"sql": fp["sql"], "sites": [
                    s["site"] for s in fp.get("call_sites", ()) if s.get("site")]}
    described = []
    for fp_id, old, new in change.grown:
        found = known.get(fp_id, {})
        described.append({"id": fp_id, "old": old, "new": new,
                          "sql": found.get("sql") or sql.get(fp_id, ""),
                          "sites": found.get("sites", [])})
    return described
