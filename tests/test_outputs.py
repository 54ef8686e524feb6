"""Report and baseline files: checked before the run, written one by one, kept on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

TWO_TESTS = """
import os
import shutil

import pytest
from shop.models import Author


@pytest.mark.django_db
def test_first():
    assert Author.objects.count() == 0


def test_remove_the_directory():
    shutil.rmtree(os.environ["DBGUARD_DOOMED_DIR"])
"""


def test_unwritable_report_path_is_a_usage_error(djproject):
    djproject.write_test(TWO_TESTS)
    # root passes access() checks everywhere; /proc still refuses new files
    result = djproject.run("--dbguard", "--dbguard-json", "/proc/r.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "dbguard: cannot write --dbguard-json '/proc/r.json': " in result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_a_failed_write_is_one_line_and_the_others_are_written(djproject, monkeypatch):
    djproject.write_test(TWO_TESTS)
    doomed = djproject.path / "doomed"
    doomed.mkdir()
    monkeypatch.setenv("DBGUARD_DOOMED_DIR", str(doomed))
    md, sarif = djproject.path / "s.md", djproject.path / "r.sarif"
    result = djproject.run("--dbguard", "--dbguard-json", str(doomed / "r.json"),
                           "--dbguard-md", str(md), "--dbguard-sarif", str(sarif))
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    out = result.stdout.str()
    assert (f"ERROR dbguard: could not write the JSON report to '{doomed / 'r.json'}': "
            "No such file or directory. The other reports were written; free the path or "
            "choose another one.") in out
    assert "Traceback" not in out and "INTERNAL ERROR" not in out
    assert "2 tests recorded" in md.read_text()
    assert json.loads(sarif.read_text())["runs"][0]["invocations"] == [
        {"executionSuccessful": True}]


def test_a_failed_baseline_update_is_not_claimed(djproject, monkeypatch):
    djproject.write_test(TWO_TESTS)
    doomed = djproject.path / "doomed"
    doomed.mkdir()
    monkeypatch.setenv("DBGUARD_DOOMED_DIR", str(doomed))
    baseline = doomed / "base.json"
    result = djproject.run("--dbguard-baseline", str(baseline), "--dbguard-baseline-update")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    out = result.stdout.str()
    assert f"ERROR dbguard: could not write the baseline to '{baseline}'" in out
    assert "updated:" not in out and "Traceback" not in out


INTERRUPTED = """
import pathlib
import time

import pytest
from shop.models import Author


@pytest.mark.django_db
def test_first():
    assert Author.objects.count() == 0


def test_waits_for_ctrl_c():
    pathlib.Path("ready").write_text("1")
    # short sleeps: the kernel may hand SIGINT to any thread of the process, and then the main
    # thread raises KeyboardInterrupt only when its current sleep returns
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)


def test_never_runs():
    pass
"""


def test_ctrl_c_writes_marked_reports_and_keeps_the_baseline(djproject):
    djproject.write_test(INTERRUPTED)
    report, md, sarif = (djproject.path / name for name in ("r.json", "s.md", "r.sarif"))
    baseline = djproject.path / "base.json"
    baseline.write_text('{"schema": "pytest-dbguard-baseline/1", "tests": {}}\n')
    before = baseline.read_bytes()
    env = dict(os.environ)
    for name, value in djproject.env().items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--dbguard",
         "--dbguard-json", str(report), "--dbguard-md", str(md), "--dbguard-sarif", str(sarif),
         "--dbguard-baseline", str(baseline), "--dbguard-baseline-update"],
        cwd=djproject.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        deadline = time.monotonic() + 60
        while not (djproject.path / "ready").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    document = json.loads(report.read_text())
    assert document["interrupted"] is True and document["summary"]["interrupted"] is True
    assert [t["nodeid"] for t in document["tests"]] == ["test_shop.py::test_first"]
    assert "the run was interrupted (Ctrl-C)" in md.read_text()
    assert json.loads(sarif.read_text())["runs"][0]["invocations"] == [
        {"executionSuccessful": False}]
    assert baseline.read_bytes() == before
    assert "updated:" not in out
    assert "the baseline file was not updated because the run was interrupted" in out
    assert not [p for p in djproject.path.iterdir() if p.name.startswith(".dbguard-")]
