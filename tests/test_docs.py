"""The documentation site: a page with real output per rule, reference tables from the code."""

from __future__ import annotations

import re

import pytest

from pytest_dbguard.markers import MARKERS
from pytest_dbguard.rules import RULES
from tests.docs_hooks import DOCS, load_docs_hooks

load_hooks = load_docs_hooks


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_every_rule_has_a_page_with_real_output(rule_id):
    page = (DOCS / "rules" / f"{rule_id}.md").read_text()
    for heading in ("## What it catches", "## Why it matters in production",
                    "## What it looks like", "## How to fix it", "## How to silence it"):
        assert heading in page
    output = re.search(r"```text\n(.*?)```", page, re.S)
    assert output is not None
    assert f"[dbguard:{rule_id}]" in output.group(1) or f"[{rule_id}]" in output.group(1)
    assert f"<!-- dbguard:rule-facts {rule_id} -->" in page
    nav = (DOCS.parent / "mkdocs.yml").read_text()
    assert f"- rules/{rule_id}.md" in nav


def test_reference_tables_come_from_the_registries(pytestconfig):
    hooks = load_hooks()
    options = hooks.options_table()
    # every option pytest itself knows in the dbguard group, with its help text
    group = next(g for g in pytestconfig._parser._groups if g.name == "dbguard")
    for option in group.options:
        assert f"`{option.names()[0]}" in options
        assert " ".join(option.attrs()["help"].split())[:40] in options
    assert "| `dbguard_rules` | linelist |" in hooks.ini_table()
    markers = hooks.markers_list()
    assert all(f"({name})" in markers for name in MARKERS)
    table = hooks.rules_table("../")
    assert table.count("](../rules/") == len(RULES)
    # a switched rule is off until its option names what to check
    assert ("| [`missing-index`](../rules/missing-index.md) | off; warn with "
            "`--dbguard-explain` |") in table
    assert "| [`template-query`](../rules/template-query.md) | off |" in table
    facts = hooks.rule_facts("connection-leak")
    assert "Default action under `--dbguard`: **fail**" in facts and "after teardown" in facts
    assert "Options: `--dbguard-slow-ms` (default `100.0`)." in hooks.rule_facts("slow-query")
    with pytest.raises(KeyError, match="n-plus-one"):
        hooks.rule_facts("n-plus-one")
