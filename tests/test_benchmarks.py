"""Every benchmark still runs: each script at a toy size, its output read, its timings not.

The targets are met in benchmarks/, never in timed tests; this only keeps the scripts from
rotting as the modules they import move (two had, unnoticed, before this test existed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# script -> (toy-size arguments, a line its report prints)
SQLITE_BENCHMARKS = {
    "bench_recorder.py": (["--queries", "50", "--repeats", "1", "--memory-queries", "100"],
                          "CaptureQueriesContext"),
    "bench_rules.py": (["--queries", "50", "--repeats", "1"], "recorder + rules"),
    "bench_reports.py": (["--tests", "20", "--repeats", "1"], "merge + compare with baseline"),
    # the profiled run (bench_profile.py) and the memory run included
    "bench_suite.py": (["--tests", "40", "--pairs", "1", "--memory-tests", "40",
                        "--backends", "sqlite", "--no-reports", "--floor"],
                       "dbguard's work per test"),
    "bench_stress.py": (["--runs", "1"], "every hang ends within"),
}


def run_benchmark(script: str, args: list[str], env: dict[str, str] | None = None
                  ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.parametrize("script", sorted(SQLITE_BENCHMARKS))
def test_benchmark_runs(script: str) -> None:
    args, expected = SQLITE_BENCHMARKS[script]
    done = run_benchmark(script, args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert expected in done.stdout, done.stdout[-3000:]


def test_lifecycle_benchmark_runs_on_postgres(pg_dsn: str) -> None:
    # a database of its own on the tests' server (pytest-django creates test_<name> from it)
    url = pg_dsn.rsplit("/", 1)[0] + f"/benchlc_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DATABASE_URL": url}
    done = run_benchmark("bench_lifecycle.py", ["--tests", "5", "--repeats", "1"], env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "--dbguard costs" in done.stdout and "census query alone" in done.stdout
    assert url.split("@")[0].split(":")[-1] not in done.stdout + done.stderr  # no password
