"""`dbguard combine` + `dbguard report`: three CI shards give the reports of one unsharded run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.djproject import NO_SLOW_QUERY

# every run of this module: its reports are compared across runs
DBGUARD = ("--dbguard", *NO_SLOW_QUERY)

# A small shop suite in three modules: N+1 through a view, a budget, repeated lookups, an
# allowed finding, parametrized and skipped tests, a module-scoped fixture, clean tests.
CONFTEST = """
import pytest
from shop.models import Author, Book, Publisher, Tag


@pytest.fixture
def shelf(db):
    author = Author.objects.create(name="Ursula")
    press = Publisher.objects.create(name="Ace")
    for n in range(4):
        Book.objects.create(title=f"Book {n}", author=author, publisher=press)
    return author
"""

CATALOG = """
import pytest
from shop.models import Author, Book, Tag


def test_book_list_view_n_plus_one(shelf, client):
    assert client.get("/books/").status_code == 200


def test_book_list_fast(shelf, client):
    assert client.get("/books-fast/").status_code == 200


@pytest.mark.parametrize("title", ["Book 0", "Book 3", "missing"])
def test_lookup(shelf, title):
    Book.objects.filter(title=title).exists()


@pytest.mark.query_budget(2)
def test_titles_within_budget(shelf):
    assert len(list(Book.objects.values_list("title", flat=True))) == 4


def test_tags(db):
    tag = Tag.objects.create(name="sf")
    assert Tag.objects.get(pk=tag.pk).name == "sf"
GROW
"""

ORDERS = """
import pytest
from shop.models import Author, Book


@pytest.mark.query_budget(1)
def test_over_budget(shelf):
    assert [book.author.name for book in Book.objects.all()] == ["Ursula"] * 4


def test_duplicate_lookups(shelf):
    for _ in range(3):
        Author.objects.filter(name="Ursula").first()


@pytest.mark.dbguard_allow("nplusone", reason="report page, batched in PR 7")
def test_allowed_n_plus_one(shelf):
    assert len({book.publisher.name for book in Book.objects.all()}) == 1


@pytest.mark.skip(reason="needs the payment sandbox")
def test_payment(db):
    pass
"""

ACCOUNTS = """
from shop.models import Author


def test_signup(db):
    Author.objects.create(name="new")
    assert Author.objects.count() == 1


def test_no_database():
    assert True


def test_profile(shelf, client):
    assert client.get(f"/authors/{shelf.pk}/").status_code == 200
"""

GROWN_LINE = "    Tag.objects.filter(name='sf').count()"
K_SPLITS = ("test_catalog", "test_orders", "not test_catalog and not test_orders")
SHARD_OUTCOMES = {"failed": 2, "passed": 11, "skipped": 1}
TESTS = 14


def write_suite(djproject: Any, grown: bool = False) -> None:
    djproject.write("conftest.py", CONFTEST)
    djproject.write_test(CATALOG.replace("GROW", GROWN_LINE if grown else ""),
                         name="test_catalog.py")
    djproject.write_test(ORDERS, name="test_orders.py")
    djproject.write_test(ACCOUNTS, name="test_accounts.py")


def dbguard_cli(cwd: Path, *args: str, stdin: str | None = None
                ) -> subprocess.CompletedProcess[str]:
    """The CLI as CI runs it: a subprocess (`python -m pytest_dbguard`) in the project dir."""
    return subprocess.run([sys.executable, "-m", "pytest_dbguard", *args], cwd=cwd, text=True,
                          capture_output=True, input=stdin, timeout=120, check=False)


def run_shards(djproject: Any, split: str, workers: str | None) -> list[str]:
    """Three shard runs, each writing only its --dbguard-json; returns the file names."""
    names = []
    for group in (1, 2, 3):
        name = f"shard-{group}.json"
        selection = (["--splits", "3", "--group", str(group)] if split == "pytest-split"
                     else ["-k", K_SPLITS[group - 1]])
        parallel = ["-n", workers] if workers else []
        result = djproject.run(*DBGUARD, "--dbguard-json", name, *selection, *parallel)
        assert result.ret in (0, 1), result.stdout.str()
        names.append(name)
    # every test ran in exactly one shard, and no shard was empty
    counts = [len(json.loads((djproject.path / n).read_text())["tests"]) for n in names]
    assert sum(counts) == TESTS and min(counts) > 0, counts
    return names


# Process state, not properties of the tests: timings; session-fixture queries (see `shared`);
# the peak of open connections, which counts the connection an earlier test in the same process
# left open (a test without the database sees 1 or 0 depending on what ran before it there,
# under xdist as much as in shards).
PROCESS_STATE = ("shared_fixture_queries", "peak")


def masked(value: Any) -> Any:
    """A JSON report with timings and per-process state zeroed."""
    if isinstance(value, dict):
        return {k: _zero(v) if k.endswith("_ms") or k in PROCESS_STATE
                else masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


def _zero(value: Any) -> Any:
    return dict.fromkeys(value, 0) if isinstance(value, dict) else 0


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


SHARED_LINE = re.compile(r"(session/module-scoped fixtures \(not charged to tests\): )\d+")


def shared(markdown: str) -> str:
    """Markdown with the session-fixture query count masked.

    Each process creates the test database (migrations) in session fixtures: three shards do
    it three times, and the combined count is their sum, as xdist sums its workers'. It is
    per-process work like a timing, not a property of the tests.
    """
    return SHARED_LINE.sub(r"\1N", markdown)


@pytest.mark.parametrize(("split", "workers"), [
    ("pytest-split", None),
    ("pytest-split", "2"),
    ("-k", None),
])
def test_three_shards_combine_to_the_unsharded_reports(djproject, split, workers):
    write_suite(djproject)
    root = djproject.path
    full = djproject.run(*DBGUARD, "--dbguard-json", "full.json", "--dbguard-md", "full.md",
                         "--dbguard-sarif", "full.sarif", "--dbguard-baseline", "base.json",
                         "--dbguard-baseline-update")
    full.assert_outcomes(**SHARD_OUTCOMES)
    (root / "base.json").rename(root / "full-base.json")
    # the unsharded JSON without the baseline, to compare with the plain combined one
    djproject.run(*DBGUARD, "--dbguard-json", "plain.json").assert_outcomes(**SHARD_OUTCOMES)

    shards = run_shards(djproject, split, workers)
    combined = dbguard_cli(root, "combine", *shards, "-o", "merged.json")
    assert (combined.returncode, combined.stderr) == (0, "")
    merged = json.loads(read(root / "merged.json"))
    assert masked(merged) == masked(json.loads(read(root / "plain.json")))
    assert merged["summary"]["shared_fixture_queries"] == sum(
        json.loads(read(root / name))["summary"]["shared_fixture_queries"] for name in shards)

    report = dbguard_cli(root, "report", "merged.json", "--md", "merged.md", "--sarif",
                         "merged.sarif", "--json", "judged.json", "--baseline", "base.json",
                         "--update")
    # failing findings (the N+1 view, the budget) fail the gate, as they fail the run
    assert report.returncode == 1, report.stderr
    assert "dbguard: 14 tests recorded" in report.stdout
    assert read(root / "base.json") == read(root / "full-base.json")
    assert shared(read(root / "merged.md")) == shared(read(root / "full.md"))
    assert read(root / "merged.sarif") == read(root / "full.sarif")
    assert masked(json.loads(read(root / "judged.json"))) == masked(
        json.loads(read(root / "full.json")))
    full_report = json.loads(read(root / "full.json"))
    summary = full_report["summary"]
    # each N+1 of the suite loads one author (publisher) again and again: also a duplicate warning
    assert summary["findings"] == {"budget": {"fail": 1}, "duplicate": {"warn": 3},
                                   "nplusone": {"allowed": 1, "fail": 2}}
    assert sorted(entry["nodeid"] for entry in full_report["tests"]
                  if any(f["rule"] == "duplicate" for f in entry["findings"])) == [
        "test_catalog.py::test_book_list_view_n_plus_one",
        "test_orders.py::test_allowed_n_plus_one", "test_orders.py::test_over_budget"]
    assert summary["baseline_update"] == {"added": 13, "changed": 0, "pruned": 0,
                                          "not_updated": ["test_orders.py::test_payment"]}


def test_one_grown_test_in_one_shard_fails_exactly_that_test(djproject, backend):
    write_suite(djproject)
    root = djproject.path
    djproject.run(*DBGUARD, "--dbguard-baseline", "base.json", "--dbguard-baseline-update")
    write_suite(djproject, grown=True)
    full = djproject.run(*DBGUARD, "--dbguard-baseline", "base.json", "--dbguard-json",
                         "full.json", "--dbguard-md", "full.md", "--dbguard-sarif", "full.sarif",
                         "--dbguard-html", "full.html")
    # the N+1s are known to the findings baseline: only the budget and the regression fail
    full.assert_outcomes(failed=2, passed=11, skipped=1)

    shards = run_shards(djproject, "-k", "2")
    # shards read through stdin and a glob, as a CI fan-in job may pass them
    merged = dbguard_cli(root, "combine", "-", "--glob", "shard-[23].json", "-o", "-",
                         stdin=read(root / shards[0]))
    assert merged.returncode == 0, merged.stderr
    report = dbguard_cli(root, "report", "-", "--baseline", "base.json", "--md", "merged.md",
                         "--sarif", "merged.sarif", "--json", "judged.json", "--junitxml",
                         "junit.xml", "--html", "merged.html", stdin=merged.stdout)
    assert report.returncode == 1, report.stderr
    assert (f"baseline {root / 'base.json'}: 1 regressions, 0 within tolerance 0, 0 improved, "
            f"0 new tests not in the baseline") in report.stdout
    judged = json.loads(read(root / "judged.json"))
    assert judged["summary"]["baseline"]["regressions"] == ["test_catalog.py::test_tags"]
    [regression] = [f for t in judged["tests"] for f in t["findings"] if f["rule"] == "regression"]
    assert regression["nodeid"] == "test_catalog.py::test_tags"
    assert regression["evidence"]["call_site"] == "test_catalog.py:27"
    assert regression["message"] == ("query count regressed against the baseline: 2 → 3 "
                                     "queries (+1, tolerance 0)")
    tags = next(t for t in judged["tests"] if t["nodeid"] == "test_catalog.py::test_tags")
    assert tags["outcome"] == "failed"
    # byte-identical to the unsharded run against the same baseline
    assert shared(read(root / "merged.md")) == shared(read(root / "full.md"))
    assert read(root / "merged.sarif") == read(root / "full.sarif")
    assert masked(judged) == masked(json.loads(read(root / "full.json")))
    assert "test_tags" in read(root / "merged.html")
    assert '<testcase classname="test_catalog" name="test_tags">' in read(root / "junit.xml")

    # the same run without the grown line passes the baseline gate apart from the findings
    clean = dbguard_cli(root, "report", "-", "--baseline", "base.json", "--tolerance", "1",
                        stdin=merged.stdout)
    assert "0 regressions, 1 within tolerance 1" in clean.stdout
