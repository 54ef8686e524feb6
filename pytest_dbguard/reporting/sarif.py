"""The --dbguard-sarif report: SARIF 2.1.0, one result per finding, located at its call site."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from . import write_atomic
from .entries import RunResults
from .run import plugin_version

SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
LEVELS = {"fail": "error", "warn": "warning", "off": "none"}
RELATED_LOCATIONS = 10


def finding_sites(finding: Mapping[str, Any]) -> list[str]:
    """The `path:line` call sites a finding's evidence names, most important first, deduplicated.

    Rules put sites in evidence as `call_site` (one), `call_sites` (a list) or inside
    `fingerprints[].call_sites[].site`; every form is read.
    """
    def candidates() -> Iterator[Any]:
        evidence = finding.get("evidence") or {}
        yield evidence.get("call_site")
        yield from evidence.get("call_sites") or ()
        for fp in evidence.get("fingerprints") or ():
            if isinstance(fp, Mapping):
                yield from fp.get("call_sites") or ()

    seen: list[str] = []
    for item in candidates():
        site = item.get("site") if isinstance(item, Mapping) else item
        if isinstance(site, str) and _split_site(site) is not None and site not in seen:
            seen.append(site)
    return seen


def _split_site(site: str) -> tuple[str, int] | None:
    path, sep, line = site.rpartition(":")
    if not sep or not path or not line.isdigit():
        return None
    return path, int(line)


@functools.lru_cache(maxsize=4096)
def _artifact_uri(path: str) -> tuple[str, str | None]:
    if os.path.isabs(path):
        return PurePosixPath(path.replace(os.sep, "/")).as_uri(), None
    return quote(path.replace(os.sep, "/")), "%SRCROOT%"


def _artifact(path: str) -> dict[str, Any]:
    uri, base = _artifact_uri(path)
    return {"uri": uri, "uriBaseId": base} if base else {"uri": uri}


def _location(path: str, line: int | None, text: str | None = None,
              index: int | None = None) -> dict[str, Any]:
    physical: dict[str, Any] = {"artifactLocation": _artifact(path)}
    if line:
        physical["region"] = {"startLine": line}
    location: dict[str, Any] = {"physicalLocation": physical}
    if index is not None:
        location["id"] = index
    if text:
        location["message"] = {"text": text}
    return location


def _rules(results: RunResults) -> list[dict[str, Any]]:
    return [
        {
            "id": rule_id,
            "name": "".join(part.capitalize() for part in rule_id.split("-")),
            "shortDescription": {"text": summary},
            "defaultConfiguration": {"level": LEVELS[default]},
            "properties": {"tags": ["database", "django"]},
        }
        for rule_id, (default, summary) in sorted(results.rules.items())
    ]


def _result(entry: Mapping[str, Any], finding: Mapping[str, Any],
            rule_index: dict[str, int]) -> dict[str, Any]:
    nodeid = entry["nodeid"]
    lines = [f"{nodeid}: {finding['message']}"]
    lines += [f"  {line}" for line in finding.get("evidence", {}).get("lines", ())]
    if finding.get("hint"):
        lines.append(f"  hint: {finding['hint']}")
    sites = finding_sites(finding)
    parsed = [p for p in map(_split_site, sites) if p is not None]
    if parsed:
        primary = _location(*parsed[0])
        related = [_location(path, line, f"also at {path}:{line}", index=i)
                   for i, (path, line) in enumerate(parsed[1:RELATED_LOCATIONS + 1])]
    else:
        where = entry.get("location") or {"path": nodeid.split("::")[0], "line": None}
        primary = _location(where["path"], where.get("line"), f"test {nodeid}")
        related = []
    key = "|".join((finding["rule"], nodeid, finding.get("phase", ""), sites[0] if sites else ""))
    result: dict[str, Any] = {
        "ruleId": finding["rule"],
        "ruleIndex": rule_index[finding["rule"]],
        "level": LEVELS.get(finding.get("action", "fail"), "warning"),
        "message": {"text": "\n".join(lines)},
        "locations": [primary],
        "partialFingerprints": {
            "dbguardFinding/v1": hashlib.sha256(key.encode("utf-8")).hexdigest()[:32],
        },
        "properties": {"nodeid": nodeid, "phase": finding.get("phase"),
                       "action": finding.get("action")},
    }
    if related:
        result["relatedLocations"] = related
    if finding.get("allowed"):
        result["suppressions"] = [{"kind": "inSource", "justification": finding["allowed"]}]
    return result


def build(results: RunResults) -> dict[str, Any]:
    rules = _rules(results)
    rule_index = {rule["id"]: i for i, rule in enumerate(rules)}
    sarif_results = [
        _result(entry, finding, rule_index)
        for entry in results.entries
        for finding in entry["findings"]
        if finding["rule"] in rule_index
    ]
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "pytest-dbguard", "version": plugin_version(),
                                "rules": rules}},
            "results": sarif_results,
            # an interrupted run's results are incomplete: say so where SARIF readers look
            "invocations": [{"executionSuccessful": not results.interrupted}],
        }],
    }


def write(path: str, results: RunResults) -> None:
    # compact: indent would switch json to its pure-Python encoder, ten times slower
    write_atomic(path, json.dumps(build(results), ensure_ascii=False) + "\n")
