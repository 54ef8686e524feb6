"""pytest-xdist: reports and baselines written with -n 2 equal those written with -n 0."""

from __future__ import annotations

import json
from typing import Any

from tests.djproject import NO_SLOW_QUERY

MODULE_A = """
import pytest
from shop.models import Author, Book


@pytest.fixture
def shelf(db):
    author = Author.objects.create(name="Ursula")
    for n in range(4):
        Book.objects.create(title=f"Book {n}", author=author)
    return author


@pytest.mark.query_budget(2)
def test_over_budget(shelf):
    assert [b.author.name for b in Book.objects.all()] == ["Ursula"] * 4


def test_select_related(shelf):
    assert len(list(Book.objects.select_related("author"))) == 4


@pytest.mark.parametrize("n", [1, 2, 3])
def test_lookups(shelf, n):
    for _ in range(n):
        Author.objects.get(pk=shelf.pk)
"""

MODULE_B = """
from shop.models import Author, Tag


def test_tags(db):
    Tag.objects.create(name="sf")
    assert Tag.objects.count() == 1


def test_grows(db):
    author = Author.objects.create(name="a")
    for _ in range(GROWTH):
        Author.objects.get(pk=author.pk)


def test_count(db):
    assert Author.objects.count() == 0
"""

VOLATILE = {"duration_ms", "db_time_ms", "total_ms", "backend_pid"}


def strip(value: Any) -> Any:
    """The report without what legitimately changes from run to run: timings and server pids."""
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two JSON documents differ, as paths: a readable assertion message."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def write_suite(djproject, growth: int) -> None:
    djproject.write_test(MODULE_A, name="test_a.py")
    djproject.write_test(MODULE_B.replace("GROWTH", str(growth)), name="test_b.py")


def test_reports_with_two_workers_equal_a_single_process_run(djproject, backend):
    write_suite(djproject, growth=1)
    path = djproject.path
    djproject.run(*NO_SLOW_QUERY, "--dbguard-baseline", "base-n0.json", "--dbguard-baseline-update",
                  "-p", "no:randomly").assert_outcomes(passed=7, failed=1)
    djproject.run("-n", "2", *NO_SLOW_QUERY, "--dbguard-baseline", "base-n2.json",
                  "--dbguard-baseline-update").assert_outcomes(passed=7, failed=1)
    assert (path / "base-n0.json").read_bytes() == (path / "base-n2.json").read_bytes()

    write_suite(djproject, growth=3)
    outputs = {}
    for workers in ("0", "2"):
        result = djproject.run(
            "-n", workers, "--dbguard", *NO_SLOW_QUERY, "--dbguard-baseline", "base-n0.json",
            "--dbguard-json", f"n{workers}.json", "--dbguard-sarif", f"n{workers}.sarif",
            "--dbguard-md", f"n{workers}.md", "--dbguard-html", f"n{workers}.html")
        result.assert_outcomes(passed=6, failed=2)
        assert "FAILED test_b.py::test_grows" in result.stdout.str()
        outputs[workers] = result

    n0, n2 = json.loads((path / "n0.json").read_text()), json.loads((path / "n2.json").read_text())
    assert [t["nodeid"] for t in n2["tests"]] == [t["nodeid"] for t in n0["tests"]]
    assert len(n0["tests"]) == 8
    # Session-scoped fixtures (pytest-django's test database set-up) really run once per worker:
    # the controller adds up what each worker sent through workeroutput.
    shared0 = n0["summary"].pop("shared_fixture_queries")
    shared2 = n2["summary"].pop("shared_fixture_queries")
    assert shared0 > 0 and shared2 == 2 * shared0
    assert not differences(strip(n0), strip(n2))
    assert n0["summary"]["baseline"]["regressions"] == ["test_b.py::test_grows"]
    # test_over_budget's lazy author lookups are also an N+1, of one author: a duplicate too
    assert n0["summary"]["findings"] == {"budget": {"fail": 1}, "nplusone": {"fail": 1},
                                         "regression": {"fail": 1}, "duplicate": {"warn": 1}}

    sarif0 = json.loads((path / "n0.sarif").read_text())
    assert json.loads((path / "n2.sarif").read_text()) == sarif0
    assert sorted(r["ruleId"] for r in sarif0["runs"][0]["results"]) == [
        "budget", "duplicate", "nplusone", "regression"]

    md0, md2 = ((path / f"n{w}.md").read_text() for w in ("0", "2"))
    # only the shared-fixture total may differ (a plain replace of the number also hit the
    # pytest-NN of the temporary path named in the baseline note when the two collided)
    shared_line = "Queries in session/module-scoped fixtures (not charged to tests): {}."
    assert shared_line.format(shared0) in md0 and shared_line.format(shared2) in md2
    assert md2.replace(shared_line.format(shared2), "S") == md0.replace(
        shared_line.format(shared0), "S")
    assert "| `test_b.py::test_grows` | 2 | 4 | +2 |" in md0


CRASH = """
import os

from shop.models import Author


def test_before(db):
    Author.objects.create(name="a")


def test_crash(db):
    Author.objects.count()
    os._exit(3)


def test_after(db):
    assert Author.objects.count() == 0
"""


def test_worker_crash_reports_which_tests_have_no_record(djproject):
    djproject.write_test(CRASH)
    result = djproject.run("-n", "2", "--dbguard", "--dbguard-json", "r.json",
                           "--dbguard-md", "r.md")
    result.assert_outcomes(passed=2, failed=1)
    report = json.loads((djproject.path / "r.json").read_text())
    assert sorted(t["nodeid"] for t in report["tests"]) == [
        "test_shop.py::test_after", "test_shop.py::test_before"]
    assert report["summary"]["missing_records"] == ["test_shop.py::test_crash"]
    out = result.stdout.str()
    assert "no dbguard record for 1 tests (worker crash or internal error): " \
           "test_shop.py::test_crash" in out
    assert "xdist workers crashed: gw" in out
    assert "test\\_shop.py::test\\_crash" in (djproject.path / "r.md").read_text()


def test_without_xdist_the_bridge_is_not_registered(djproject):
    djproject.write_test(CRASH.replace("os._exit(3)", "pass"))
    result = djproject.run("-p", "no:xdist", "--dbguard", "--dbguard-json", "r.json")
    result.assert_outcomes(passed=3)
    report = json.loads((djproject.path / "r.json").read_text())
    assert len(report["tests"]) == 3 and "missing_records" not in report["summary"]
