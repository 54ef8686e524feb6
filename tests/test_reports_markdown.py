"""--dbguard-md: totals, findings by rule, regressions table, top tests; safe for any test name."""

from __future__ import annotations

from pytest_dbguard.reporting.markdown import code, text
from tests.report_scenario import GROWS_SITE, run_scenario


def test_markdown_summary_of_a_pr_run(djproject):
    run_scenario(djproject, "--dbguard-md", "summary.md")
    md = (djproject.path / "summary.md").read_text()
    assert md.startswith("## ❌ pytest-dbguard\n")
    assert "**5 tests recorded," in md
    assert "**3 failing findings** · 1 warnings · 1 allowed · 2 tests failed by dbguard" in md
    assert ("**1 regressions** beyond tolerance 0 (1 more allowed by dbguard\\_allow) · "
            "0 within tolerance · 0 improved · 1 new tests (not in the baseline) · "
            "2 unchanged") in md
    assert ("| `test_shop.py::test_grows` | 1 | 2 | +1 | new: 1× "
            '`SELECT ... FROM "shop_author" WHERE "shop_author"."id" = %s LIMIT %s` '
            f"at `{GROWS_SITE}` |") in md
    # the allowed regression is not a regression of the gate, but it shows in the counts
    assert "| `regression` | 1 | 0 | 1 |" in md
    assert "| `budget` | 1 | 0 | 0 |" in md
    assert "| `nplusone` | 1 | 0 | 0 |" in md
    assert "- `test_shop.py::test_new`: 1 queries" in md
    assert "### Top tests by call-phase queries" in md
    assert "| `test_shop.py::test_over_budget` | " in md
    # a test name with Markdown and HTML in it stays inside its table cell
    assert "``test_shop.py::test_odd_name[<b>\\|x`y]``" in md


def test_markdown_passing_run_without_baseline(djproject):
    djproject.write_test("""
        from shop.models import Author

        def test_fine(db):
            assert Author.objects.count() == 0
    """)
    djproject.run("--dbguard", "--dbguard-md", "summary.md").assert_outcomes(passed=1)
    md = (djproject.path / "summary.md").read_text()
    assert md.startswith("## ✅ pytest-dbguard\n")
    assert "regressions" not in md and "Findings by rule" not in md


def test_cell_escaping():
    assert text("a|b <script> *x*\nnext") == "a\\|b \\<script\\> \\*x\\* next"
    assert code("plain") == "`plain`"
    assert code("x`y|z") == "``x`y\\|z``"
    assert code("`edge`") == "`` `edge` ``"
