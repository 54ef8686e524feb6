"""Rule knowledge stays with the rules: no built-in rule id is written outside rules/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import pytest_dbguard
from pytest_dbguard.rules import builtin_registry

pytestmark = pytest.mark.unit

PACKAGE = Path(pytest_dbguard.__file__).parent
# (file, line text) pairs where an id-like word is a label shown to people, not a rule id
LABELS = {("reporting/html.py", '("regression", comparison.regressions)')}


def test_no_builtin_rule_id_is_written_outside_rules():
    ids = "|".join(re.escape(i) for i in builtin_registry().ids())
    quoted = re.compile(rf"""["']({ids})["']""")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("rules/"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if quoted.search(line) and not any(
                    relative == file and text in line for file, text in LABELS):
                found.append(f"{relative}:{number}: {line.strip()}")
    assert found == []
