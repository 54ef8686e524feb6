"""Per-test report entries: the plain dict a test's record becomes, and the run summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TypedDict

from ..events import PHASES, Finding, FingerprintStats, TestRecord
from ..rules.known import KNOWN_REASON
from ..stress.facts import STRESS

SCHEMA = "pytest-dbguard/1"
TOP_FINGERPRINTS = 5


class FindingEntry(TypedDict):
    """One finding in a pytest-dbguard/1 test entry."""

    rule: str
    action: str
    phase: str
    message: str
    hint: str
    evidence: dict[str, Any]
    allowed: str | None
    nodeid: str


class ReportEntry(TypedDict):
    """One test in the pytest-dbguard/1 report; the same dict travels from xdist workers."""

    nodeid: str
    outcome: str | None
    queries: dict[str, int]
    transaction_control: dict[str, int]
    by_alias: dict[str, dict[str, int]]
    duration_ms: float
    db_time_ms: dict[str, float]
    connections: dict[str, Any]
    vendors: list[str]
    findings: list[FindingEntry]
    top_fingerprints: list[dict[str, Any]]
    call_fingerprints: dict[str, int]
    call_fingerprint_sites: dict[str, list[dict[str, Any]]]
    allowed_rules: dict[str, str]
    call_completed: bool
    location: dict[str, Any] | None
    stress: dict[str, Any] | None


def test_entry(record: TestRecord, findings: list[Finding], duration_ms: float, *,
               call_completed: bool = True,
               location: tuple[str, int] | None = None,
               allowed: dict[str, str] | None = None,
               fingerprints: bool = True) -> ReportEntry:
    """The JSON form of one test; the same dict travels from xdist workers to the controller.

    `call_completed` says the test body returned (the baseline only takes counts of bodies that
    ran to the end); `location` is the test function's file and 1-based line; `allowed` the
    test's dbguard_allow reasons by rule. `fingerprints=False` leaves the call phase's
    statements out (top_fingerprints, call_fingerprints, call_fingerprint_sites stay empty):
    only the report files and the baseline read them, and a run that writes neither need not
    group every test's queries by fingerprint once more.
    """
    setup, call, teardown = (record.phase(name) for name in PHASES)
    call_stats = call.fingerprints if fingerprints and call.rows else ()
    return {
        "nodeid": record.nodeid,
        "outcome": None,  # filled in from the test's reports
        "queries": {"setup": setup.query_count, "call": call.query_count,
                    "teardown": teardown.query_count},
        "transaction_control": _shared_counts(setup.transaction_control_count,
                                              call.transaction_control_count,
                                              teardown.transaction_control_count),
        "by_alias": _by_alias(setup.by_alias, call.by_alias, teardown.by_alias),
        "duration_ms": round(duration_ms, 3),
        "db_time_ms": {"setup": round(setup.duration_ms, 3), "call": round(call.duration_ms, 3),
                       "teardown": round(teardown.duration_ms, 3)},
        "connections": _connections(record),
        "vendors": _shared_list(record.vendors),
        # a list each garbage collection walks for every test kept, unless it is the shared
        # empty one (entries are never changed below their top level)
        "findings": [finding_entry(f) for f in findings] if findings else _NO_FINDINGS,
        "top_fingerprints": [_top_fingerprint(fp) for fp in call_stats[:TOP_FINGERPRINTS]]
        if call_stats else _NO_FINDINGS,
        # the whole call-phase multiset (fingerprint id -> count): what the baseline stores
        "call_fingerprints": dict(sorted(
            (fp.fingerprint_id, fp.count) for fp in call_stats
            if not fp.is_transaction_control
        )) if call_stats else {},
        # call sites of every call-phase shape and the test's dbguard_allow reasons: what
        # `dbguard report --baseline` needs to judge a shard's tests as the regression rule does
        "call_fingerprint_sites": {
            fp.fingerprint_id: _sites(fp.call_sites)
            for fp in sorted(call_stats, key=lambda fp: fp.fingerprint_id)
            if not fp.is_transaction_control
        } if call_stats else {},
        "allowed_rules": dict(sorted(allowed.items())) if allowed else {},
        "call_completed": call_completed,
        "location": {"path": location[0], "line": location[1]} if location else None,
        # stress mode: rounds run, errors per thread, deadlocks, lock waits, wait-for graph
        "stress": _stress(record),
    }


def _by_alias(*per_phase: tuple[tuple[str, int], ...]) -> dict[str, dict[str, int]]:
    if not any(per_phase):
        return {}
    counts: dict[str, list[int]] = {}
    for at, phase_counts in enumerate(per_phase):
        for alias, count in phase_counts:
            counts.setdefault(alias, [0, 0, 0])[at] = count
    return {alias: _shared_counts(*c) for alias, c in counts.items()}


def _connections(record: TestRecord) -> dict[str, Any]:
    if not record.connections:
        return _shared_counts(0, 0, record.peak_connections, keys=_CONNECTION_KEYS)
    details = [c.to_dict() for c in record.connections]
    return {
        "opened": len(details),
        "still_open": sum(1 for c in record.connections if not c.closed),
        "peak": record.peak_connections,
        "details": details,
    }


# Parts of entries that many tests repeat (the same call sites with the same counts, the same
# aliases), built once and shared by every entry that has them: a run keeps every entry to its
# end, and these small dicts and lists were a fifth of it. Entries are never changed in place
# below the top level, so sharing is safe; the caches are cleared when they grow large.
_SHARED_MAX = 20_000
_shared_sites: dict[Any, list[dict[str, Any]]] = {}
_shared_aliases: dict[Any, dict[str, int]] = {}
_shared_small: dict[Any, Any] = {}
_CONNECTION_KEYS = ("opened", "still_open", "peak")


def _shared_counts(*counts: int, keys: tuple[str, ...] = PHASES) -> dict[str, Any]:
    """{phase: count} (or {key: count}), one dict for every entry with the same counts."""
    found = _shared_small.get((keys, counts))
    if found is None:
        if len(_shared_small) >= _SHARED_MAX:
            _shared_small.clear()
        found = _shared_small[(keys, counts)] = dict(zip(keys, counts, strict=True))
        if keys is _CONNECTION_KEYS:
            found["details"] = []
    return found


def _shared_list(items: tuple[str, ...]) -> list[str]:
    found = _shared_small.get(items)
    if found is None:
        if len(_shared_small) >= _SHARED_MAX:
            _shared_small.clear()
        found = _shared_small[items] = list(items)
    return found  # type: ignore[no-any-return]


def _sites(call_sites: tuple[tuple[Any, int], ...]) -> list[dict[str, Any]]:
    sites = _shared_sites.get(call_sites)
    if sites is None:
        if len(_shared_sites) >= _SHARED_MAX:
            _shared_sites.clear()
        sites = _shared_sites[call_sites] = [
            {"site": str(site) if site else None, "count": n} for site, n in call_sites]
    return sites


def _top_fingerprint(fp: FingerprintStats) -> dict[str, Any]:
    """fp.to_dict(), with its aliases and call sites shared between entries."""
    aliases = _shared_aliases.get(fp.aliases)
    if aliases is None:
        if len(_shared_aliases) >= _SHARED_MAX:
            _shared_aliases.clear()
        aliases = _shared_aliases[fp.aliases] = dict(fp.aliases)
    return {
        "id": fp.fingerprint_id,
        "sql": fp.fingerprint,
        "count": fp.count,
        "total_ms": round(fp.total_ms, 3),
        "aliases": aliases,
        "call_sites": _sites(fp.call_sites),
        "examples": list(fp.examples) if fp.examples else _NO_EXAMPLES,
    }


_NO_EXAMPLES: list[str] = []
_NO_FINDINGS: list[Any] = []


def finding_entry(finding: Finding) -> FindingEntry:
    return FindingEntry(rule=finding.rule, action=finding.action, phase=finding.phase,
                        message=finding.message, hint=finding.hint, evidence=finding.evidence,
                        allowed=finding.allowed_reason, nodeid=finding.nodeid)


def summarise(entries: list[ReportEntry], shared_fixture_queries: int = 0) -> dict[str, Any]:
    queries = dict.fromkeys(PHASES, 0)
    findings: dict[str, Counter[str]] = {}
    failed_by_dbguard = 0
    vendors: set[str] = set()
    for entry in entries:
        for phase, count in entry["queries"].items():
            queries[phase] += count
        vendors.update(entry.get("vendors", ()))
        failing = False
        for finding in entry["findings"]:
            bucket = findings.setdefault(finding["rule"], Counter())
            if finding.get("allowed") == KNOWN_REASON:
                bucket["known"] += 1
            elif finding.get("allowed"):
                bucket["allowed"] += 1
            else:
                bucket[finding["action"]] += 1
                failing = failing or finding["action"] == "fail"
        failed_by_dbguard += failing
    return {
        "tests": len(entries),
        "tests_with_queries": sum(1 for e in entries if sum(e["queries"].values())),
        "queries": queries,
        "shared_fixture_queries": shared_fixture_queries,
        "findings": {rule: dict(sorted(c.items())) for rule, c in sorted(findings.items())},
        "tests_failed_by_dbguard": failed_by_dbguard,
        "vendors": sorted(vendors),
    }


def top_tests(entries: list[ReportEntry], limit: int = 5) -> list[ReportEntry]:
    ranked = [e for e in entries if e["queries"]["call"]]
    ranked.sort(key=lambda e: (-e["queries"]["call"], e["nodeid"]))
    return ranked[:limit]


@dataclass
class RunResults:
    """Everything the end-of-run report writers need, merged across xdist workers.

    `entries` are finished entries (outcome filled in) sorted by nodeid; `sql` maps the
    fingerprint ids this run saw to their normalised SQL; `comparison` / `baseline_update` are
    baseline.Comparison / Update when a baseline was given; `rules` maps every rule id of the
    run to (default action, summary), the data reports list rules from.
    """

    entries: list[ReportEntry]
    shared_fixture_queries: int = 0
    sql: dict[str, str] = field(default_factory=dict)
    comparison: Any = None
    baseline_update: Any = None
    missing_records: list[str] = field(default_factory=list)
    crashed_workers: list[str] = field(default_factory=list)
    # what recording noticed; `notes` adds what the end of the run concluded (reporting/run.py)
    session_notes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False
    # the JSON report's run description: plugin version and the settings that shape findings
    meta: dict[str, Any] = field(default_factory=dict)
    rules: dict[str, tuple[str, str]] = field(default_factory=lambda: builtin_rule_table())
    _summary: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def summary(self) -> dict[str, Any]:
        """The run's summary, computed once (every format shows the same one)."""
        if self._summary is None:
            self._summary = self._summarise()
        return self._summary

    def _summarise(self) -> dict[str, Any]:
        summary = summarise(self.entries, self.shared_fixture_queries)
        if self.comparison is not None:
            summary["baseline"] = self.comparison.summary()
        if self.baseline_update is not None:
            summary["baseline_update"] = self.baseline_update.summary()
        if self.missing_records:
            summary["missing_records"] = list(self.missing_records)
        if self.interrupted:
            summary["interrupted"] = True
        return summary


def builtin_rule_table() -> dict[str, tuple[str, str]]:
    """Rule id -> (default action, summary) of the built-in rules, for results built elsewhere."""
    from ..rules import builtin_registry

    return {spec.id: (spec.default_action, spec.summary) for spec in builtin_registry()}


def _stress(record: TestRecord) -> dict[str, Any] | None:
    facts = record.facts.get(STRESS)
    return facts.to_dict() if facts is not None else None
