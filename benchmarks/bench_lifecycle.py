"""Whole-suite cost of dbguard's lifecycle probes (census included) on PostgreSQL.

Run: python benchmarks/bench_lifecycle.py [--tests 300] [--repeats 5]

Copies the example project to a temporary directory, adds a module of ordinary passing database
tests (create a few rows, query them, the shape of most Django suites), and runs that module
with pytest in subprocesses, interleaving three variants so machine noise hits them alike:
without the plugin (`-p no:dbguard`), installed but off, and `--dbguard`. Prints the median wall
time of each and the ratios; the target for `--dbguard` is at most 1.03 of the plugin-free run.
It also times the census query alone (the one extra round trip per test on PostgreSQL).

PostgreSQL: DATABASE_URL (a database URL whose role may create databases), else a throwaway
server from tests/pgserver.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SUITE = '''
import pytest
from catalog.models import Author, Book


@pytest.mark.django_db
@pytest.mark.parametrize("n", range({tests}))
def test_catalog(n):
    author = Author.objects.create(name=f"author {{n}}")
    Book.objects.create(title="t", isbn=f"{{n:013d}}", author=author, price_cents=100)
    assert Book.objects.filter(author=author).count() == 1
'''


def run(project: Path, env: dict[str, str], *args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        # the example's addopts name dbguard options, unknown under -p no:dbguard
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-o",
         "addopts=-p no:cacheprovider", "tests/test_bench.py", *args],
        cwd=project, env=env, capture_output=True, text=True,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"benchmark run failed ({args}):\n{done.stdout[-3000:]}")
    return elapsed


def census_query_ms(url: str, repeats: int = 500) -> float:
    import psycopg

    from pytest_dbguard.backends import for_vendor

    census = for_vendor("postgresql").census  # the query the census probe runs after a test
    with psycopg.connect(url, autocommit=True) as conn:
        census(conn, ["nothing"], time.time())
        start = time.perf_counter()
        for _ in range(repeats):
            census(conn, ["test_bookstore"], time.time())
        return (time.perf_counter() - start) / repeats * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tests", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL")
    pg_dir = None
    if not url:
        from tests import pgserver

        pg_dir = Path(tempfile.mkdtemp(prefix="dbguard-bench-pg-"))
        os.chmod(pg_dir, 0o755)
        dsn = subprocess.run(
            [sys.executable, "-m", "tests.pgserver", "start", "--dir", str(pg_dir)],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
        url = pgserver.dsn_with_dbname(dsn, "bookstore_bench")
    project = Path(tempfile.mkdtemp(prefix="dbguard-bench-")) / "example_tests"
    try:
        shutil.copytree(ROOT / "example_tests", project)
        (project / "tests" / "test_bench.py").write_text(SUITE.format(tests=args.tests))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env["DATABASE_URL"] = url
        variants = {
            "without the plugin": ("-p", "no:dbguard"),
            "plugin installed, off": (),
            "--dbguard": ("--dbguard",),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        run(project, env, "--dbguard")  # warm caches (bytecode, the server's catalog)
        for _ in range(args.repeats):
            for name, extra in variants.items():
                times[name].append(run(project, env, *extra))
        base = statistics.median(times["without the plugin"])
        print(f"{args.tests} PostgreSQL tests, median of {args.repeats} interleaved runs")
        for name, samples in times.items():
            median = statistics.median(samples)
            print(f"  {name:<24} {median:7.3f} s   ratio {median / base:5.3f}")
        per_test = (statistics.median(times["--dbguard"]) - base) / args.tests * 1000.0
        print(f"  --dbguard costs {per_test:.2f} ms per test in all "
              f"(target: ratio <= 1.03)")
        print(f"  census query alone: {census_query_ms(url.rsplit('/', 1)[0] + '/postgres'):.3f}"
              f" ms per test")
    finally:
        shutil.rmtree(project.parent, ignore_errors=True)
        if pg_dir is not None:
            subprocess.run([sys.executable, "-m", "tests.pgserver", "stop", "--dir",
                            str(pg_dir)], cwd=ROOT, capture_output=True)
            shutil.rmtree(pg_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
