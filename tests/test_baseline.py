"""The query baseline end to end: update, compare, the `regression` rule, subset runs, bad files."""

from __future__ import annotations

import json

import pytest

SHOP_TESTS = """
import pytest
from shop.models import Author, Book


@pytest.fixture
def shelf(db):
    author = Author.objects.create(name="Ursula")
    for n in range(3):
        Book.objects.create(title=f"Book {{n}}", author=author)
    return author


def test_titles(shelf):
    titles = [book.title for book in Book.objects.all()]
{extra}
    assert len(titles) == 3


def test_authors(shelf):
    assert Author.objects.count() == 1


def test_no_db():
    assert True
"""

# line 16 of the module written by write_shop(extra=EXTRA_QUERY)
EXTRA_QUERY = "    assert Author.objects.get(pk=shelf.pk).name == 'Ursula'"
AUTHOR_GET = 'SELECT ... FROM "shop_author" WHERE "shop_author"."id" = %s LIMIT %s'


def write_shop(djproject, extra: str = "    pass") -> None:
    djproject.write_test(SHOP_TESTS.format(extra=extra))


def read(path) -> dict:
    return json.loads(path.read_text())


def test_pr_scenario_fails_exactly_the_test_that_gained_a_query(djproject, backend):
    """Update the baseline on main, add one query in a PR, rerun: only that test fails."""
    write_shop(djproject)
    baseline = djproject.path / "dbguard-baseline.json"
    first = djproject.run("--dbguard-baseline", str(baseline), "--dbguard-baseline-update")
    first.assert_outcomes(passed=3)
    assert "baseline " in first.stdout.str() and "updated: 3 added, 0 changed" in \
        first.stdout.str()
    stored = read(baseline)
    assert stored["schema"] == "pytest-dbguard-baseline/1"
    assert sorted(stored["tests"]) == [
        "test_shop.py::test_authors", "test_shop.py::test_no_db", "test_shop.py::test_titles"]
    assert stored["tests"]["test_shop.py::test_titles"]["queries"] == 1
    assert stored["tests"]["test_shop.py::test_authors"]["queries"] == 1
    assert stored["tests"]["test_shop.py::test_no_db"] == {"fingerprints": {}, "queries": 0}
    (titles_fp,) = stored["tests"]["test_shop.py::test_titles"]["fingerprints"]
    assert stored["sql"][titles_fp].startswith("SELECT ")
    assert '"shop_book"' in stored["sql"][titles_fp]
    before = baseline.read_bytes()

    # the PR adds one query to test_titles; no --dbguard: a baseline alone turns recording on
    write_shop(djproject, extra=EXTRA_QUERY)
    result = djproject.run("--dbguard-baseline", str(baseline))
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "FAILED test_shop.py::test_titles" in out
    assert ("[dbguard:regression] query count regressed against the baseline: 1 → 2 queries "
            "(+1, tolerance 0)") in out
    assert f"new: 1× {AUTHOR_GET}  at test_shop.py:16" in out
    assert "1 regressions, 0 within tolerance 0, 0 improved, 0 new tests" in out
    assert baseline.read_bytes() == before, "comparing must never rewrite the baseline"

    # a tolerance of one query lets the same change through
    tolerant = djproject.run("--dbguard-baseline", str(baseline),
                             "--dbguard-baseline-tolerance", "1")
    tolerant.assert_outcomes(passed=3)
    assert "0 regressions, 1 within tolerance 1" in tolerant.stdout.str()


def test_regression_lists_grown_shapes_with_call_sites_and_percent_tolerance(djproject):
    djproject.write_test("""
        from shop.models import Author

        def test_lookups(db):
            author = Author.objects.create(name="a")
            for _ in range(N):
                Author.objects.get(pk=author.pk)
    """.replace("N", "2"))
    baseline = djproject.path / "base.json"
    djproject.run("--dbguard-baseline", str(baseline), "--dbguard-baseline-update"
                  ).assert_outcomes(passed=1)
    # the create is one query, the lookups two
    assert read(baseline)["tests"]["test_shop.py::test_lookups"]["queries"] == 3

    djproject.write_test("""
        from shop.models import Author

        def test_lookups(db):
            author = Author.objects.create(name="a")
            for _ in range(N):
                Author.objects.get(pk=author.pk)
    """.replace("N", "5"))
    # 50% of 3 allows one extra query (rounded down): 6 is beyond it
    result = djproject.run("--dbguard-baseline", str(baseline),
                           "--dbguard-baseline-tolerance", "50%",
                           "--dbguard-json", "report.json")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert ("query count regressed against the baseline: 3 → 6 queries (+3, tolerance 50% "
            "= 1 queries)") in out
    assert f"2 → 5: 5× {AUTHOR_GET}  at test_shop.py:7" in out
    (finding,) = read(djproject.path / "report.json")["tests"][0]["findings"]
    assert finding["rule"] == "regression"
    assert finding["evidence"]["old"] == 3 and finding["evidence"]["new"] == 6
    (grown,) = finding["evidence"]["fingerprints"]
    assert (grown["old"], grown["new"]) == (2, 5)
    assert grown["call_sites"] == [{"site": "test_shop.py:7", "count": 5}]


def test_near_misses_new_tests_fewer_queries_and_allowed(djproject):
    """New tests pass and are listed; fewer queries pass; dbguard_allow keeps it in the report."""
    write_shop(djproject)
    baseline = djproject.path / "base.json"
    djproject.run("--dbguard-baseline", str(baseline), "--dbguard-baseline-update", "-k",
                  "titles").assert_outcomes(passed=1, deselected=2)
    assert list(read(baseline)["tests"]) == ["test_shop.py::test_titles"]

    djproject.write_test(SHOP_TESTS.format(extra="    pass").replace(
        "def test_titles(shelf):\n    titles = [book.title for book in Book.objects.all()]",
        "def test_titles(shelf):\n    titles = ['a', 'b', 'c']"))
    result = djproject.run("--dbguard-baseline", str(baseline), "--dbguard-md", "summary.md")
    result.assert_outcomes(passed=3)
    assert "0 regressions, 0 within tolerance 0, 1 improved, 2 new tests not in the baseline" \
        in result.stdout.str()
    summary = (djproject.path / "summary.md").read_text()
    assert "**0 regressions** beyond tolerance 0" in summary
    assert "- `test_shop.py::test_authors`: 1 queries" in summary
    assert "| `test_shop.py::test_titles` | 1 | 0 |" in summary

    write_shop(djproject, extra=EXTRA_QUERY)
    djproject.write_test(SHOP_TESTS.format(extra=EXTRA_QUERY).replace(
        "def test_titles(shelf):",
        '@pytest.mark.dbguard_allow("regression", reason="cache warm-up lands in PR 12")\n'
        "def test_titles(shelf):"))
    allowed = djproject.run("--dbguard-baseline", str(baseline), "--dbguard-json", "r.json")
    allowed.assert_outcomes(passed=3)
    titles = next(t for t in read(djproject.path / "r.json")["tests"]
                  if t["nodeid"].endswith("test_titles"))
    assert [(f["rule"], f["allowed"]) for f in titles["findings"]] == [
        ("regression", "cache warm-up lands in PR 12")]


def test_subset_update_keeps_other_entries_and_prune_removes_gone_tests(djproject):
    write_shop(djproject)
    baseline = djproject.path / "base.json"
    djproject.run("--dbguard-baseline", str(baseline), "--dbguard-baseline-update"
                  ).assert_outcomes(passed=3)
    # a subset run with a changed count updates only what it ran
    write_shop(djproject, extra=EXTRA_QUERY)
    djproject.run("--dbguard-baseline", str(baseline), "--dbguard-baseline-update",
                  "test_shop.py::test_titles").assert_outcomes(passed=1)
    tests = read(baseline)["tests"]
    assert sorted(tests) == ["test_shop.py::test_authors", "test_shop.py::test_no_db",
                             "test_shop.py::test_titles"]
    assert tests["test_shop.py::test_titles"]["queries"] == 2

    # test_no_db is deleted from the suite: an update keeps it, an update with prune drops it
    djproject.write_test(SHOP_TESTS.format(extra=EXTRA_QUERY).split("def test_no_db")[0])
    djproject.run("--dbguard-baseline", str(baseline), "--dbguard-baseline-update"
                  ).assert_outcomes(passed=2)
    assert "test_shop.py::test_no_db" in read(baseline)["tests"]
    pruned = djproject.run("--dbguard-baseline", str(baseline), "--dbguard-baseline-update",
                           "--dbguard-baseline-prune")
    pruned.assert_outcomes(passed=2)
    assert "updated: 0 added, 0 changed, 1 pruned" in pruned.stdout.str()
    assert sorted(read(baseline)["tests"]) == ["test_shop.py::test_authors",
                                               "test_shop.py::test_titles"]


def test_failing_and_skipped_tests_keep_their_old_entry(djproject):
    write_shop(djproject)
    baseline = djproject.path / "base.json"
    djproject.run("--dbguard-baseline", str(baseline), "--dbguard-baseline-update"
                  ).assert_outcomes(passed=3)
    before = read(baseline)
    djproject.write_test(SHOP_TESTS.format(extra="    raise RuntimeError('half way')").replace(
        "def test_authors(shelf):", "@pytest.mark.skip(reason='off today')\n"
                                    "def test_authors(shelf):"))
    result = djproject.run("--dbguard-baseline", str(baseline), "--dbguard-baseline-update")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    assert "2 tests kept their old baseline entry" in result.stdout.str()
    assert read(baseline) == before


def test_file_is_diff_friendly_and_stable(djproject):
    write_shop(djproject)
    baseline = djproject.path / "base.json"
    djproject.run("--dbguard-baseline", str(baseline), "--dbguard-baseline-update",
                  "-p", "no:randomly").assert_outcomes(passed=3)
    text = baseline.read_text()
    lines = text.splitlines()
    assert lines[:3] == ["{", '  "schema": "pytest-dbguard-baseline/1",', '  "tests": {']
    test_lines = [line for line in lines if line.startswith('    "test_shop.py::')]
    assert len(test_lines) == 3, "one line per test"
    assert test_lines == sorted(test_lines)
    assert str(djproject.path) not in text, "no absolute paths"
    assert "_ms" not in text, "no timings"
    # a second update on an unchanged suite rewrites the same bytes
    djproject.run("--dbguard-baseline", str(baseline), "--dbguard-baseline-update",
                  "-p", "no:randomly").assert_outcomes(passed=3)
    assert baseline.read_text() == text


@pytest.mark.parametrize(("content", "problem"), [
    ("{not json", "is not valid JSON (line 1, column 2"),
    ('{"schema": "pytest-dbguard/1", "tests": {}}',
     "has schema 'pytest-dbguard/1', expected \"pytest-dbguard-baseline/1\""),
    ('{"tests": {}}', "has no \"schema\" key"),
    ('{"schema": "pytest-dbguard-baseline/1", "tests": {"t.py::x": {"queries": -1, '
     '"fingerprints": {}}}}', "has no whole, non-negative \"queries\" count for test 't.py::x'"),
    ('{"schema": "pytest-dbguard-baseline/1", "tests": {"t.py::x": {"queries": 1}}}',
     "has no \"fingerprints\" object"),
    ("[]", "must be a JSON object"),
])
def test_bad_baseline_file_is_a_usage_error_naming_file_and_problem(djproject, content,
                                                                    problem):
    write_shop(djproject)
    bad = djproject.path / "bad.json"
    bad.write_text(content)
    for extra in ((), ("--dbguard-baseline-update",)):
        result = djproject.run("--dbguard-baseline", str(bad), *extra)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        err = result.stderr.str()
        assert f"dbguard: baseline file '{bad}' {problem}" in err
        assert "passed" not in result.stdout.str()
    assert bad.read_text() == content


def test_option_errors_before_tests_run(djproject, tmp_path):
    write_shop(djproject)
    missing = djproject.path / "nope.json"
    cases = [
        (("--dbguard-baseline", str(missing)),
         f"baseline file '{missing}' does not exist; create it with --dbguard-baseline-update"),
        (("--dbguard-baseline-update",),
         "--dbguard-baseline-update needs --dbguard-baseline PATH"),
        (("--dbguard-baseline", str(missing), "--dbguard-baseline-update",
          "--dbguard-baseline-tolerance", "many"),
         "--dbguard-baseline-tolerance: expected a whole number of queries (3) or a "
         "percentage (10%), got 'many'"),
        (("--dbguard-baseline", str(missing), "--dbguard-baseline-prune"),
         "--dbguard-baseline-prune only applies with --dbguard-baseline-update"),
        (("--dbguard-baseline", str(tmp_path / "no-dir" / "b.json"),
          "--dbguard-baseline-update"), "cannot write --dbguard-baseline"),
        (("--dbguard-md", str(tmp_path / "no-dir" / "s.md")), "cannot write --dbguard-md"),
        (("--dbguard-html", str(tmp_path)), "--dbguard-html"),
        (("--dbguard-sarif", str(tmp_path / "no-dir" / "r.sarif")),
         "cannot write --dbguard-sarif"),
    ]
    for args, message in cases:
        result = djproject.run(*args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, args
        assert message in result.stderr.str(), (args, result.stderr.str())
    assert not missing.exists()


def test_interrupted_update_leaves_the_old_file(djproject):
    write_shop(djproject)
    baseline = djproject.path / "base.json"
    djproject.run("--dbguard-baseline", str(baseline), "--dbguard-baseline-update"
                  ).assert_outcomes(passed=3)
    before = baseline.read_bytes()
    djproject.write_test(SHOP_TESTS.format(extra=EXTRA_QUERY + "\n    raise KeyboardInterrupt"))
    result = djproject.run("--dbguard-baseline", str(baseline), "--dbguard-baseline-update")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert baseline.read_bytes() == before
    assert not [p for p in djproject.path.iterdir() if p.name.startswith(".dbguard-")]
