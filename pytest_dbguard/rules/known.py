"""Stable keys for findings, and marking the ones a findings baseline already knows."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from typing import Any

from ..events import NO_SITE, Catalog, Finding

# Shown wherever an allowed reason is: known findings never fail, and summaries count them
# apart from findings allowed by a marker.
KNOWN_REASON = "known: recorded in the findings baseline (--dbguard-baseline)"

# Not baselined: limits the user set on purpose (budget markers, --dbguard-max-queries, query
# timeouts) and the query-count baseline's own rule.
NOT_BASELINED = frozenset({"budget", "regression", "query-timeout"})

_LINE = re.compile(r"(\.py):\d+")
_NUMBER = re.compile(r"\d+")


def site_key(catalog: Catalog, site_i: int) -> str:
    """A call site as a baseline key: file and function, never the line (edits shift lines)."""
    if site_i == NO_SITE:
        return ""
    site = catalog.sites[site_i]
    return f"{site.path}::{site.function}"


def finding_key(rule: str, message: str, evidence: Mapping[str, Any]) -> str:
    """rule id, call site (file::function) and query shape; a line-free message otherwise."""
    site = evidence.get("site_key")
    if site is None:
        where = evidence.get("site") or next(iter(evidence.get("sites") or ()), None)
        site = _LINE.sub(r"\1", where) if isinstance(where, str) else ""
    shape = evidence.get("fingerprint_id") or ""
    if site or shape:
        return f"{rule} {site} {shape}".rstrip()
    return f"{rule} " + _NUMBER.sub("N", _LINE.sub(r"\1", message))


def key_of(finding: Mapping[str, Any]) -> str:
    """The key of a finding in its dict form (as test entries and reports hold it)."""
    return finding_key(finding["rule"], finding["message"], finding.get("evidence", {}))


def mark_known(findings: list[Finding], known: Collection[str]) -> list[Finding]:
    """Findings the baseline knows for this test no longer fail; new ones are untouched."""
    if not known:
        return findings
    return [
        replace(f, allowed_reason=KNOWN_REASON)
        if f.allowed_reason is None and f.rule not in NOT_BASELINED
        and finding_key(f.rule, f.message, f.evidence) in known
        else f
        for f in findings
    ]


def mark_known_entries(entries: Iterable[dict[str, Any]],
                       baseline_tests: Mapping[str, Mapping[str, Any]]) -> None:
    """`dbguard report --baseline`: mark finished entries as a run with the baseline would have.

    Shards that ran without the baseline failed their tests on findings the baseline knows. A
    test whose body ran to the end failed only through dbguard's findings, so once none of them
    fails any more it passed, exactly as in an unsharded run. An error (a teardown finding) is
    left as it is: a fixture may have failed at teardown too, and the shard cannot tell.
    """
    for entry in entries:
        known = set((baseline_tests.get(entry["nodeid"]) or {}).get("findings", ()))
        if not known:
            continue
        for finding in entry["findings"]:
            if (not finding.get("allowed") and finding["rule"] not in NOT_BASELINED
                    and key_of(finding) in known):
                finding["allowed"] = KNOWN_REASON
        if (entry.get("outcome") == "failed" and entry.get("call_completed")
                and not any(f["action"] == "fail" and not f.get("allowed")
                            for f in entry["findings"])):
            entry["outcome"] = "passed"
