"""Path options, ini keys and aliases: each mistake is one line naming the key and the fix."""

from __future__ import annotations

import json

import pytest

from tests.test_config import OVER_BUDGET


def add_ini(djproject, *lines: str) -> None:
    ini = djproject.path / "pytest.ini"
    ini.write_text(ini.read_text() + "".join(f"{line}\n" for line in lines))


def test_ini_report_paths_resolve_against_the_rootdir(djproject, monkeypatch):
    djproject.write_test(OVER_BUDGET)
    add_ini(djproject, "dbguard = true", "dbguard_json = out/r.json", "dbguard_md = out/s.md")
    (djproject.path / "out").mkdir()
    sub = djproject.path / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)  # relative ini paths must not follow the working directory
    result = djproject.run("../test_shop.py")
    result.assert_outcomes(failed=1)
    document = json.loads((djproject.path / "out" / "r.json").read_text())
    assert [t["nodeid"] for t in document["tests"]] == ["test_shop.py::test_two"]
    assert "1 tests recorded" in (djproject.path / "out" / "s.md").read_text()
    # the option beats the ini key
    monkeypatch.chdir(djproject.path)
    djproject.run("--dbguard-json", "mine.json").assert_outcomes(failed=1)
    assert (djproject.path / "mine.json").exists()


def test_ini_baseline_key(djproject):
    djproject.write_test(OVER_BUDGET)
    add_ini(djproject, "dbguard_baseline = base.json")
    djproject.run("--dbguard-baseline-update").assert_outcomes(failed=1)
    assert "test_shop.py::test_two" in json.loads(
        (djproject.path / "base.json").read_text())["tests"]


def test_existing_path_as_a_separate_argument_names_the_fix(djproject, tmp_path_factory):
    djproject.write_test(OVER_BUDGET)
    outside = tmp_path_factory.mktemp("reports") / "report.json"
    outside.write_text("{}")
    result = djproject.run("--dbguard", "--dbguard-json", str(outside))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert (f"dbguard: --dbguard-json {outside} is a separate argument naming an existing "
            f"path, so pytest took it for a test path and chose rootdir ") in err
    assert f"Write --dbguard-json={outside}, or set dbguard_json in the ini file." in err
    assert "settings are not configured" not in err + result.stdout.str()
    djproject.run("--dbguard", f"--dbguard-json={outside}").assert_outcomes(failed=1)
    baseline = outside.parent / "base.json"
    djproject.run(f"--dbguard-baseline={baseline}", "--dbguard-baseline-update")
    result = djproject.run("--dbguard-baseline", str(baseline))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (f"Write --dbguard-baseline={baseline}, or set dbguard_baseline in the ini file."
            in result.stderr.str())
    # a path inside the project changes nothing: no error
    (djproject.path / "r.json").write_text("{}")
    djproject.run("--dbguard", "--dbguard-json", "r.json").assert_outcomes(failed=1)


@pytest.mark.parametrize(("args", "ini", "message"), [
    (("--dbguard-json", ""), (), "dbguard: --dbguard-json needs a file path, got an empty "
     "string. Write --dbguard-json=PATH or set dbguard_json in the ini file."),
    (("--dbguard-json", "same.out", "--dbguard-md", "same.out"), (),
     "same.out'; one would overwrite the other. Give each its own path."),
    (("--dbguard-sarif", "base.json", "--dbguard-baseline=base.json"), (),
     "dbguard: --dbguard-sarif and --dbguard-baseline name the same file"),
    ((), ("dbguard = maybe",), "dbguard: ini key dbguard: invalid truth value 'maybe'; write "
     "dbguard = true or dbguard = false."),
    (("--dbguard-readonly-alias", "nosuch"), (), "dbguard: --dbguard-readonly-alias: 'nosuch' "
     "is not a configured database alias. Configured aliases (settings.DATABASES): default. "
     "Fix the option's value."),
])
def test_bad_input_is_one_line_before_tests_run(djproject, args, ini, message):
    djproject.write_test(OVER_BUDGET)
    (djproject.path / "base.json").write_text(
        '{"schema": "pytest-dbguard-baseline/1", "tests": {}}\n')
    add_ini(djproject, *ini)
    result = djproject.run(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_ini_rules_on_one_line_separated_by_commas(djproject):
    djproject.write_test(OVER_BUDGET)
    add_ini(djproject, "dbguard_rules = budget=warn, duplicate=off")
    result = djproject.run("--dbguard")
    result.assert_outcomes(passed=1)
    assert "budget: 1 warn" in result.stdout.str()


ALIAS_MARKERS = '''
import pytest
from shop.models import Author


@pytest.mark.django_db
@pytest.mark.query_budget(1, using="nosuch")
def test_budget_alias():
    Author.objects.count()


@pytest.mark.django_db
@pytest.mark.query_timeout(100, using=["default", "replica"])
def test_timeout_alias():
    Author.objects.count()


@pytest.mark.django_db
@pytest.mark.query_budget(1, using="default")
def test_known_alias():
    Author.objects.count()
'''


def test_unknown_alias_in_a_marker_fails_that_test_once(djproject):
    djproject.write_test(ALIAS_MARKERS)
    result = djproject.run()
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()
    assert ("invalid @pytest.mark.query_budget: 'nosuch' is not a configured database alias. "
            "Configured aliases (settings.DATABASES): default.") in out
    assert ("invalid @pytest.mark.query_timeout: 'replica' is not a configured database alias."
            in out)
    assert "During handling of the above exception" not in out
    failures = out.split("= FAILURES =")[1].split("short test summary")[0]
    assert failures.count("'nosuch' is not a configured database alias") == 1
