"""The newsroom example project, run as its team would: no false failures, then adoption with a
findings baseline (known findings pass, a new N+1 fails exactly its test)."""

from __future__ import annotations

import json
from pathlib import Path

NEWSROOM = Path(__file__).resolve().parent.parent / "example_projects" / "newsroom"
KNOWN_FAILURES = {
    "tests/test_api.py::StoryApiTests::test_story_list_with_tags",
    "tests/test_api.py::test_beats_of_all_reporters",
}
NEW_NPLUSONE = '''
import pytest

from desk.models import Reporter, Section, Story


@pytest.mark.django_db
def test_headlines_with_sections():
    section = Section.objects.create(name="World")
    reporter = Reporter.objects.create(name="Correspondent")
    for i in range(3):
        Story.objects.create(headline=f"Dispatch {i}", section=section, reporter=reporter)
    from desk.services import headlines_with_sections
    assert len(headlines_with_sections()) == 3
'''
NEW_SERVICE = '''

def headlines_with_sections():
    return [f"{s.section.name}: {s.headline}" for s in Story.objects.all()]
'''


def _newsroom(djproject):
    for path in sorted(NEWSROOM.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix == ".py" \
                or path.name == "pytest.ini":
            djproject.write(str(path.relative_to(NEWSROOM)), path.read_text(), dedent=False)
    return djproject


def _failing(result) -> set[str]:
    return {line.split(" ")[1] for line in result.outlines
            if line.startswith(("FAILED ", "ERROR "))}


def _leftover_databases(djproject) -> list[str]:
    if djproject.admin_dsn is None:
        return []
    import psycopg

    with psycopg.connect(djproject.admin_dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                            (f"test_{djproject.db_name}",)).fetchall()
    return [name for (name,) in rows]


def test_defaults_fail_only_the_real_findings_and_clean_up_the_leak(djproject, backend):
    _newsroom(djproject)
    result = djproject.run("--dbguard", "-p", "no:randomly")
    result.assert_outcomes(passed=12, failed=2, errors=1)
    out = result.stdout.str()
    assert _failing(result) == KNOWN_FAILURES | {
        "tests/test_archive.py::test_story_count_from_async_code"}
    assert "[dbguard:connection-leak] 1 connection opened by this test is still open" in out
    assert "lazy Story.tags at desk/serializers.py:14" in out
    assert "lazy Reporter.beat at desk/services.py:46" in out
    # set-up of the unittest classes and Django's flushes never reach the body's rules
    assert "slow-query" not in out and "unknown call site" not in out
    assert "is being accessed by other users" not in out
    assert _leftover_databases(djproject) == []
    section = out[out.index("= dbguard ="):out.index("short test summary")]
    assert len(section.splitlines()) <= 40


def test_findings_baseline_adopts_the_suite_and_new_nplusones_fail(djproject, backend):
    _newsroom(djproject)
    baseline = djproject.path / "dbguard-baseline.json"
    djproject.run("--dbguard", "-p", "no:randomly", f"--dbguard-baseline={baseline}",
                  "--dbguard-baseline-update")
    written = baseline.read_text()
    document = json.loads(written)
    tests = document["tests"]
    assert tests["tests/test_api.py::StoryApiTests::test_story_list_with_tags"]["findings"] == [
        f"nplusone desk/serializers.py::story_data_with_tags "
        f"{_only_finding_shape(tests, 'test_story_list_with_tags')}"]
    assert "findings" not in tests["tests/test_api.py::StoryApiTests::test_story_list"]

    result = djproject.run("--dbguard", "-p", "no:randomly", f"--dbguard-baseline={baseline}")
    result.assert_outcomes(passed=14)
    out = result.stdout.str()
    assert "0 failing findings" in out and "known (in the findings baseline)" in out
    assert "    nplusone: 2 known\n" in out
    assert "is being accessed by other users" not in out

    # lines move (an unrelated edit above the N+1): still the same known finding
    services = djproject.path / "desk" / "services.py"
    services.write_text('"""Moved."""\n\n\n' + services.read_text())
    # and a new N+1 appears in a new test
    services.write_text(services.read_text() + NEW_SERVICE)
    djproject.write("tests/test_world.py", NEW_NPLUSONE)
    result = djproject.run("--dbguard", "-p", "no:randomly", f"--dbguard-baseline={baseline}")
    result.assert_outcomes(passed=14, failed=1)
    assert _failing(result) == {"tests/test_world.py::test_headlines_with_sections"}
    assert "lazy Story.section at desk/services.py:" in result.stdout.str()

    # a subset update keeps every other test's entry; fixing the N+1 prunes its key
    api = djproject.path / "desk" / "api.py"
    api.write_text(api.read_text().replace(
        'select_related("section", "reporter").order_by("pk")\n    return JsonResponse({"stories": '
        '[story_data_with_tags',
        'select_related("section", "reporter").prefetch_related("tags").order_by("pk")\n'
        '    return JsonResponse({"stories": [story_data_with_tags'))
    result = djproject.run("--dbguard", "-p", "no:randomly", f"--dbguard-baseline={baseline}",
                           "--dbguard-baseline-update", "tests/test_api.py")
    updated = json.loads(baseline.read_text())["tests"]
    assert set(updated) == set(tests)
    assert "findings" not in updated["tests/test_api.py::StoryApiTests::test_story_list_with_tags"]
    assert updated["tests/test_api.py::test_beats_of_all_reporters"]["findings"]
    assert updated["tests/test_desk.py::TaggingTests::test_desk_sections"] == \
        tests["tests/test_desk.py::TaggingTests::test_desk_sections"]


def _only_finding_shape(tests: dict, name: str) -> str:
    entry = next(v for k, v in tests.items() if k.endswith(name))
    return next(fp for fp, n in entry["fingerprints"].items() if n == 5)
