"""`dbguard report --junitxml`: a JUnit XML file of the combined run, for CI test-result views.

A single run gets the same data from pytest's own --junitxml (the plugin adds <property>
elements); shards combined have no pytest run left, so this writes one testcase per recorded
test with the same properties, and a <failure> for each test dbguard failed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ..events import PHASES
from . import write_atomic
from .entries import RunResults


def render(results: RunResults) -> str:
    suite = ET.Element("testsuite", name="pytest-dbguard")
    failures = skipped = 0
    for entry in results.entries:
        module, _, name = entry["nodeid"].rpartition("::")
        case = ET.SubElement(suite, "testcase", classname=module.replace("/", ".").removesuffix(
            ".py").replace("::", "."), name=name or entry["nodeid"])
        props = ET.SubElement(case, "properties")
        for phase in PHASES:
            ET.SubElement(props, "property", name=f"dbguard_queries_{phase}",
                          value=str(entry["queries"][phase]))
        failing = [f for f in entry["findings"] if f["action"] == "fail" and not f.get("allowed")]
        rules = sorted({f["rule"] for f in entry["findings"] if not f.get("allowed")})
        if rules:
            ET.SubElement(props, "property", name="dbguard_findings", value=",".join(rules))
        if failing:
            failures += 1
            failure = ET.SubElement(case, "failure", message=failing[0]["message"])
            failure.text = "\n\n".join(
                "\n".join([f"[dbguard:{f['rule']}] {f['message']}"]
                          + [f"    {line}" for line in f.get("evidence", {}).get("lines", ())]
                          + ([f"    hint: {f['hint']}"] if f.get("hint") else []))
                for f in failing)
        elif entry.get("outcome") == "skipped":
            skipped += 1
            ET.SubElement(case, "skipped")
    suite.set("tests", str(len(results.entries)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write(path: str, results: RunResults) -> None:
    write_atomic(path, render(results))
