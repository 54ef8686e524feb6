"""Time to write each end-of-run report for a 10k-test suite (target: under one second each).

Run: python benchmarks/bench_reports.py [--tests 10000] [--repeats 5]

Entries are made the way a run makes them (recorder rows -> build_phase -> TestRecord ->
test_entry), with a realistic mix: a few query shapes per test from a few call sites, one test in
ten failing a budget, one in fifty regressing against the baseline. Only the work done at the end
of a run is timed: merging (RunResults, baseline comparison and update) and writing the JSON,
Markdown, HTML, SARIF and baseline files. Prints medians over the repeats and the file sizes.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pytest_dbguard import baseline, cli  # noqa: E402
from pytest_dbguard.events import CallSite, Catalog, ConnInfo, Finding, TestRecord  # noqa: E402
from pytest_dbguard.recording.fingerprint import make_shape  # noqa: E402
from pytest_dbguard.recording.recorder import build_phase  # noqa: E402
from pytest_dbguard.reporting import html, json_report, markdown, sarif  # noqa: E402
from pytest_dbguard.reporting.entries import RunResults, test_entry  # noqa: E402
from pytest_dbguard.rules.regression import Tolerance  # noqa: E402

TARGET_S = 1.0


def make_entries(n_tests: int, seed: int = 7) -> tuple[list[dict], dict[str, str]]:
    rng = random.Random(seed)
    catalog = Catalog()
    tables = [f"app{i}_model{j}" for i in range(8) for j in range(6)]
    for table in tables:
        catalog.shapes.append(make_shape(f'SELECT "{table}"."id", "{table}"."name" FROM "{table}" '
                                         f'WHERE "{table}"."owner_id" = 42 LIMIT 21'))
        catalog.shapes.append(make_shape(f'INSERT INTO "{table}" ("name") VALUES (\'x\')'))
    catalog.sites.extend(CallSite(f"tests/app{i}/test_views.py", 10 + j, f"test_{j}")
                         for i in range(40) for j in range(25))
    catalog.conns.append(ConnInfo("default", "postgresql", "MainThread"))
    entries = []
    for t in range(n_tests):
        nodeid = f"tests/app{t % 40}/test_views.py::TestViews::test_case_{t}"
        rows = []
        for _ in range(rng.choice((0, 1, 2, 3, 5, 8, 13))):
            shape = rng.randrange(len(catalog.shapes))
            site = rng.randrange(len(catalog.sites))
            rows.extend((shape, site, 0, 0, 0, 0, 0.0004, None) for _ in range(rng.randint(1, 4)))
        call = build_phase("call", rows, {}, catalog)
        setup = build_phase("setup", rows[:3], {}, catalog)
        record = TestRecord(nodeid, {"setup": setup, "call": call}, vendors=("postgresql",))
        findings = []
        if t % 10 == 0 and call.query_count:
            findings.append(Finding(
                "budget", nodeid, "call", f"query budget exceeded: {call.query_count} queries > "
                f"budget 1 (alias default)", evidence={
                    "lines": [f"{fp.count}× {fp.fingerprint[:80]}" for fp in call.fingerprints],
                    "fingerprints": [fp.to_dict() for fp in call.fingerprints[:8]]},
                hint="cut the repeated queries"))
        entry = test_entry(record, findings, 12.5, location=(nodeid.split("::")[0], 10))
        entry["outcome"] = "failed" if findings else "passed"
        entries.append(entry)
    sql = {s.fingerprint_id: s.fingerprint for s in catalog.shapes}
    return entries, sql


def old_baseline(entries: list[dict], sql: dict[str, str]) -> baseline.Baseline:
    """The baseline before the PR: every fiftieth test ran one query fewer."""
    tests = {}
    for i, entry in enumerate(entries):
        fingerprints = dict(entry["call_fingerprints"])
        queries = entry["queries"]["call"]
        if i % 50 == 0 and fingerprints:
            first = next(iter(fingerprints))
            fingerprints[first] -= 1
            queries -= 1
            if not fingerprints[first]:
                del fingerprints[first]
        tests[entry["nodeid"]] = {"queries": queries, "fingerprints": fingerprints}
    return baseline.Baseline(tests=tests, sql=dict(sql))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tests", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    entries, sql = make_entries(args.tests)
    old = old_baseline(entries, sql)
    tolerance = Tolerance()
    directory = tempfile.mkdtemp(prefix="dbguard-bench-")
    paths = {name: os.path.join(directory, name) for name in
             ("report.json", "report.md", "report.html", "report.sarif", "baseline.json",
              "shard-1.json", "shard-2.json", "shard-3.json", "shard-4.json")}

    def merge() -> RunResults:
        results = RunResults(entries=sorted(entries, key=lambda e: e["nodeid"]), sql=sql)
        results.comparison = baseline.compare(old, results.entries, tolerance)
        return results

    results = merge()
    # the same run as four CI shards' JSON reports, for `dbguard combine`
    for group in range(4):
        shard = RunResults(entries=results.entries[group::4], sql=sql,
                           meta={"plugin_version": "0", "settings": {}})
        json_report.write(paths[f"shard-{group + 1}.json"], shard)

    def combine_shards() -> RunResults:
        import json

        named = []
        for group in range(4):
            with open(paths[f"shard-{group + 1}.json"], encoding="utf-8") as handle:
                named.append((f"shard-{group + 1}.json", json.load(handle)))
        return cli.combine(named)

    steps: list[tuple[str, Callable[[], object]]] = [
        ("merge + compare with baseline", merge),
        ("json", lambda: json_report.write(paths["report.json"], results)),
        ("markdown", lambda: markdown.write(paths["report.md"], results)),
        ("html", lambda: html.write(paths["report.html"], results)),
        ("sarif", lambda: sarif.write(paths["report.sarif"], results)),
        ("baseline update + write", lambda: baseline.write(
            paths["baseline.json"], baseline.updated(old, results.entries, sql)[0])),
        ("baseline load (next run)", lambda: baseline.load(paths["baseline.json"])),
        ("4 shards: combine (read, merge)", combine_shards),
    ]
    timings: dict[str, list[float]] = {name: [] for name, _ in steps}
    for _ in range(args.repeats):
        for name, step in steps:
            start = time.perf_counter()
            step()
            timings[name].append(time.perf_counter() - start)

    n_findings = sum(len(e["findings"]) for e in entries)
    print(f"report writing for {args.tests} tests ({n_findings} findings, "
          f"{len(results.comparison.regressions)} regressions), median of {args.repeats}:")
    total = 0.0
    slowest = 0.0
    for name, _ in steps:
        median = statistics.median(timings[name])
        total += median
        slowest = max(slowest, median)
        print(f"  {name:<32} {median * 1000:8.1f} ms   ratio to target {median / TARGET_S:.2f}")
    print(f"  {'slowest single step':<32} {slowest * 1000:8.1f} ms   target < "
          f"{TARGET_S * 1000:.0f} ms: {'OK' if slowest < TARGET_S else 'OVER'}")
    print(f"  {'all formats together':<32} {total * 1000:8.1f} ms   ratio to target "
          f"{total / TARGET_S:.2f} ({'OK' if total < TARGET_S else 'OVER'})")
    print(f"  load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name, path in paths.items():
        print(f"  {name:<14} {os.path.getsize(path) / 1e6:7.2f} MB")
    for path in paths.values():
        os.unlink(path)
    os.rmdir(directory)


if __name__ == "__main__":
    main()
