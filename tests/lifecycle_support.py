"""Helpers of the lifecycle rule tests: findings per test from the JSON report, pids masked."""

from __future__ import annotations

import json
import re
from typing import Any

FILE_TEST_DB = """
if "sqlite" in DATABASES["default"]["ENGINE"]:
    # threads need a file: Django shares nothing across threads of an in-memory test database
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test_db.sqlite3")}
"""

_MASKS = (
    (re.compile(r"backend pid \d+"), "backend pid N"),
    (re.compile(r"test_dbg_[0-9a-f]+(_gw\d+)?"), "TEST_DB"),
)


def mask(text: str) -> str:
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


def run_json(project: Any, *args: str) -> tuple[Any, dict[str, list[dict[str, Any]]]]:
    """Run the project with --dbguard and a JSON report: (result, findings by test name)."""
    report = project.path / "dbguard.json"
    result = project.run("--dbguard", "-p", "no:randomly", "--dbguard-json", str(report), *args)
    data = json.loads(report.read_text())
    findings: dict[str, list[dict[str, Any]]] = {}
    for entry in data["tests"]:
        name = entry["nodeid"].split("::")[-1]
        findings[name] = [
            {
                "rule": f["rule"],
                "phase": f["phase"],
                "message": mask(f["message"]),
                "lines": [mask(line) for line in f["evidence"].get("lines", [])],
                "hint": f["hint"],
            }
            for f in entry["findings"]
        ]
    return result, findings


def rules_of(findings: dict[str, list[dict[str, Any]]], name: str) -> list[str]:
    return [f["rule"] for f in findings.get(name, [])]


def line_of(source: str, snippet: str) -> int:
    """The line number `snippet` has in the test module written from `source`."""
    for number, line in enumerate(source.split("\n"), start=1):
        if snippet in line:
            return number
    raise ValueError(f"{snippet!r} is not in the source")
