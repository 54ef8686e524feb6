"""The one end-of-run write path: reports one by one, the baseline after them, Ctrl-C marked."""

from __future__ import annotations

import gc
import json
from types import SimpleNamespace

import pytest

from pytest_dbguard import baseline as baseline_file
from pytest_dbguard.reporting import write_requested
from pytest_dbguard.results import BASELINE_KEPT_NOTE, INTERRUPTED_NOTE, RunCollector
from pytest_dbguard.rules import builtin_registry
from tests.unit.test_reports_units import results

pytestmark = pytest.mark.unit


def test_a_failed_report_is_one_sentence_and_the_next_is_written(tmp_path):
    settings = SimpleNamespace(json_path=str(tmp_path / "missing" / "a.json"), md_path=None,
                               html_path=None, sarif_path=str(tmp_path / "a.sarif"))
    errors = write_requested(settings, results())
    assert errors == [f"dbguard: could not write the JSON report to "
                      f"'{tmp_path / 'missing' / 'a.json'}': No such file or directory. The "
                      f"other reports were written; free the path or choose another one."]
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["a.sarif"]


def test_an_interrupted_run_marks_every_format(tmp_path):
    run = results(interrupted=True)
    settings = SimpleNamespace(json_path=str(tmp_path / "a.json"), md_path=None,
                               html_path=None, sarif_path=str(tmp_path / "a.sarif"))
    assert write_requested(settings, run) == []
    document = json.loads((tmp_path / "a.json").read_text())
    assert document["interrupted"] is True and document["summary"]["interrupted"] is True
    sarif = json.loads((tmp_path / "a.sarif").read_text())
    assert sarif["runs"][0]["invocations"] == [{"executionSuccessful": False}]


def collector(tmp_path, **paths) -> RunCollector:
    path = tmp_path / "base.json"
    reports = {"json_path": None, "md_path": None, "html_path": None, "sarif_path": None,
               "junitxml_path": None}
    settings = SimpleNamespace(
        enabled=True, rules=builtin_registry(), baseline=baseline_file.Baseline(),
        baseline_path=str(path), baseline_update=True, baseline_prune=False,
        baseline_tolerance="0", actions={}, max_queries=None, show_params=False,
        query_timeout_ms=None, stress=False, stress_threads=None, stress_scope="marked",
        stress_timeout=None, rule_options={}, **{**reports, **paths})
    return RunCollector(settings)  # type: ignore[arg-type]


def test_the_baseline_waits_for_every_report(tmp_path):
    run = collector(tmp_path, json_path=str(tmp_path / "missing" / "a.json"))
    run.write_outputs()
    assert not (tmp_path / "base.json").exists()
    assert run.report_errors[1] == (
        f"dbguard: the baseline '{tmp_path / 'base.json'}' was not updated because a report "
        f"could not be written; fix the report path and run again.")
    assert not [n for n in run.results().notes if "updated:" in n]


def test_the_baseline_is_written_after_the_reports(tmp_path):
    run = collector(tmp_path)
    run.write_outputs()
    assert run.report_errors == []
    assert (tmp_path / "base.json").exists()
    assert [n for n in run.results().notes if "updated: 0 added" in n]


def test_ctrl_c_keeps_the_baseline_and_says_so(tmp_path):
    run = collector(tmp_path)
    run.interrupted = True
    run.write_outputs()
    notes = run.results().notes
    assert notes[0] == INTERRUPTED_NOTE and BASELINE_KEPT_NOTE in notes
    assert not (tmp_path / "base.json").exists() and run.report_errors == []


def test_dbguard_report_writes_the_other_formats_and_names_the_failed_one(tmp_path, capsys):
    from pytest_dbguard import cli
    from pytest_dbguard.reporting import json_report

    merged = tmp_path / "merged.json"
    json_report.write(str(merged), results(meta={"plugin_version": "0", "settings": {}}))
    missing = tmp_path / "missing" / "s.md"
    code = cli.main(["report", str(merged), "--md", str(missing),
                     "--sarif", str(tmp_path / "r.sarif")])
    assert code == cli.BAD_INPUT
    assert capsys.readouterr().err == (
        f"dbguard report: error: could not write the Markdown summary to '{missing}': No such "
        f"file or directory. The other reports were written; free the path or choose another "
        f"one.\n")
    assert (tmp_path / "r.sarif").exists()


def test_reports_are_built_with_the_sessions_objects_frozen(tmp_path, monkeypatch):
    from pytest_dbguard.reporting import json_report

    seen = []
    real = json_report.write
    monkeypatch.setattr(json_report, "write",
                        lambda path, results: (seen.append(gc.get_freeze_count()),
                                               real(path, results)))
    run = collector(tmp_path, json_path=str(tmp_path / "a.json"))
    before = gc.get_freeze_count()  # Python 3.12 freezes a few hundred of its own at start-up
    run.write_outputs()
    if before == 0:
        assert seen and seen[0] > 0  # the writer ran with the session's objects frozen
    else:
        assert seen == [before]  # objects someone else froze: left as they were
    assert gc.get_freeze_count() == before  # and collected as usual again
    assert json.loads((tmp_path / "a.json").read_text())["schema"]


def test_a_process_that_froze_objects_itself_keeps_them_frozen(tmp_path):
    ours = gc.get_freeze_count() == 0  # Python 3.12 has frozen some of its own already
    if ours:
        gc.freeze()
    try:
        run = collector(tmp_path, json_path=str(tmp_path / "a.json"))
        run.write_outputs()
        assert gc.get_freeze_count() > 0  # not unfrozen by the reports
    finally:
        if ours:
            gc.unfreeze()
    assert run.report_errors == []
